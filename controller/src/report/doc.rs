//! A small document model written out twice: as Markdown (charts linked as files) and as one
//! self-contained HTML page (responsive CSS, no fetches): a figure with data is an interactive
//! chart there (`interactive.rs`), its PNG inline as base64 inside `<noscript>`; one without is
//! the PNG.

use super::interactive::{self, ChartData};
use super::util::{html_escape, md_cell};
use base64::Engine;

/// A rendered chart: its file name under `charts/`, what it shows, and the PNG bytes.
#[derive(Debug, Clone)]
pub struct Figure {
    pub file: String,
    pub title: String,
    pub caption: String,
    pub png: Vec<u8>,
    /// What its interactive chart draws in the HTML page; None: the PNG alone.
    pub data: Option<Box<ChartData>>,
}

/// A table of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One block of the document.
#[derive(Debug, Clone)]
pub enum Block {
    Heading(String),
    Para(String),
    List(Vec<String>),
    Table(Table),
    Figure(Figure),
}

/// A document: a title, a subtitle line, and blocks.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    pub title: String,
    pub subtitle: String,
    pub blocks: Vec<Block>,
}

impl Doc {
    /// The figures, in order.
    pub fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Figure(f) => Some(f),
            _ => None,
        })
    }

    /// Markdown with charts linked as `charts/<file>`.
    pub fn to_markdown(&self) -> String {
        let mut s = format!("# {}\n\n{}\n", self.title, self.subtitle);
        for b in &self.blocks {
            s.push('\n');
            match b {
                Block::Heading(h) => s.push_str(&format!("## {h}\n")),
                Block::Para(p) => s.push_str(&format!("{p}\n")),
                Block::List(items) => {
                    for i in items {
                        s.push_str(&format!("- {i}\n"));
                    }
                }
                Block::Table(t) => {
                    let row = |cells: &[String]| {
                        format!(
                            "| {} |\n",
                            cells
                                .iter()
                                .map(|c| md_cell(c))
                                .collect::<Vec<_>>()
                                .join(" | ")
                        )
                    };
                    s.push_str(&row(&t.headers));
                    s.push_str(&format!("|{}\n", "---|".repeat(t.headers.len())));
                    for r in &t.rows {
                        s.push_str(&row(r));
                    }
                }
                Block::Figure(f) => s.push_str(&format!(
                    "![{}](charts/{})\n\n*{}*\n",
                    f.title, f.file, f.caption
                )),
            }
        }
        s
    }

    /// One HTML file: styles inline, charts as data URIs; readable from a phone to a desktop.
    pub fn to_html(&self) -> String {
        let mut s = String::from(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        );
        s.push_str(&format!("<title>{}</title>\n", html_escape(&self.title)));
        s.push_str(STYLE);
        let data: Vec<Option<&ChartData>> = self.figures().map(|f| f.data.as_deref()).collect();
        let live = data.iter().any(Option::is_some);
        if live {
            s.push_str(&interactive::style());
        }
        s.push_str("</head>\n<body>\n<main>\n");
        let mut fig_index = 0usize;
        s.push_str(&format!(
            "<h1>{}</h1>\n<p class=\"sub\">{}</p>\n",
            html_escape(&self.title),
            html_escape(&self.subtitle)
        ));
        for b in &self.blocks {
            match b {
                Block::Heading(h) => s.push_str(&format!("<h2>{}</h2>\n", html_escape(h))),
                Block::Para(p) => s.push_str(&format!("<p>{}</p>\n", html_escape(p))),
                Block::List(items) => {
                    s.push_str("<ul>\n");
                    for i in items {
                        s.push_str(&format!("<li>{}</li>\n", html_escape(i)));
                    }
                    s.push_str("</ul>\n");
                }
                Block::Table(t) => {
                    s.push_str("<div class=\"table\"><table>\n<thead><tr>");
                    for h in &t.headers {
                        s.push_str(&format!("<th>{}</th>", html_escape(h)));
                    }
                    s.push_str("</tr></thead>\n<tbody>\n");
                    for r in &t.rows {
                        s.push_str("<tr>");
                        for c in r {
                            s.push_str(&format!("<td>{}</td>", html_escape(c)));
                        }
                        s.push_str("</tr>\n");
                    }
                    s.push_str("</tbody></table></div>\n");
                }
                Block::Figure(f) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&f.png);
                    let (w, h) = super::plot::SIZE_PX;
                    let img = format!(
                        "<img src=\"data:image/png;base64,{b64}\" width=\"{w}\" height=\"{h}\" alt=\"{}\">",
                        html_escape(&f.title)
                    );
                    let body = if f.data.is_some() {
                        format!(
                            "<div class=\"ichart\" data-i=\"{fig_index}\"></div><noscript>{img}</noscript>"
                        )
                    } else {
                        img
                    };
                    s.push_str(&format!(
                        "<figure class=\"chart\" id=\"{}\">{body}<figcaption>{}</figcaption></figure>\n",
                        html_escape(f.file.trim_end_matches(".png")),
                        html_escape(&f.caption)
                    ));
                    fig_index += 1;
                }
            }
        }
        s.push_str("</main>\n");
        if live {
            s.push_str(&interactive::scripts(&data));
        }
        s.push_str("</body>\n</html>\n");
        s
    }
}

const STYLE: &str = "<style>\n\
:root { color-scheme: light; }\n\
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1b1b1b; background: #fafafa; }\n\
main { max-width: 1040px; margin: 0 auto; padding: 12px 16px 48px; }\n\
h1 { font-size: 1.6rem; margin: 0.6em 0 0.2em; }\n\
h2 { font-size: 1.25rem; margin: 1.6em 0 0.5em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }\n\
.sub { color: #555; margin-top: 0; }\n\
li { margin: 0.35em 0; }\n\
.table { overflow-x: auto; -webkit-overflow-scrolling: touch; border: 1px solid #ddd; background: #fff; }\n\
table { border-collapse: collapse; font-size: 0.9rem; white-space: nowrap; }\n\
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: right; }\n\
th { background: #f1f3f5; position: sticky; top: 0; }\n\
td:first-child, th:first-child { text-align: left; }\n\
figure.chart { margin: 1.2em 0; background: #fff; border: 1px solid #ddd; padding: 6px; }\n\
figure.chart img { display: block; width: 100%; max-width: 100%; height: auto; }\n\
figcaption { color: #555; font-size: 0.9rem; padding: 4px 2px 0; }\n\
@media (max-width: 600px) { body { font-size: 15px; } main { padding: 8px 10px 32px; } h1 { font-size: 1.3rem; } }\n\
</style>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_renderings_escape_and_embed() {
        let doc = Doc {
            title: "a <b>".into(),
            subtitle: "s".into(),
            blocks: vec![
                Block::Table(Table {
                    headers: vec!["x|y".into()],
                    rows: vec![vec!["1".into()]],
                }),
                Block::Figure(Figure {
                    file: "t.png".into(),
                    title: "T".into(),
                    caption: "c".into(),
                    png: vec![1, 2, 3],
                    data: None,
                }),
            ],
        };
        let md = doc.to_markdown();
        assert!(
            md.contains("| x\\|y |") && md.contains("![T](charts/t.png)"),
            "{md}"
        );
        let html = doc.to_html();
        assert!(html.contains("<title>a &lt;b&gt;</title>"));
        assert!(html.contains("src=\"data:image/png;base64,AQID\""));
        assert!(!html.contains("http"), "nothing fetched from anywhere");
    }
}
