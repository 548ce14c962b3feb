//! Number formatting and HTML escaping shared by the report's tables, findings and charts.

/// A number with as many decimals as its size deserves: 1234, 87.5, 3.48, 0.154.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Seconds as `154 ms` or `1.3 s`.
pub fn fmt_s(v: f64) -> String {
    if v < 1.0 {
        format!("{} ms", fmt_num(v * 1e3))
    } else {
        format!("{} s", fmt_num(v))
    }
}

/// Bytes as MiB or GiB.
pub fn fmt_bytes(v: f64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if v >= 1024.0 * MIB {
        format!("{} GiB", fmt_num(v / (1024.0 * MIB)))
    } else {
        format!("{} MiB", fmt_num(v / MIB))
    }
}

/// An optional number, or an en dash.
pub fn opt_num(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), fmt_num)
}

/// An optional duration in seconds, or an en dash.
pub fn opt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), fmt_s)
}

/// Text safe inside HTML elements and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text safe inside a Markdown table cell.
pub fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_naturally() {
        assert_eq!(fmt_num(348.2), "348");
        assert_eq!(fmt_num(87.49), "87.5");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.1536), "0.154");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_s(0.1536), "154 ms");
        assert_eq!(fmt_s(1.298), "1.3 s");
        assert_eq!(fmt_bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(
            html_escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
