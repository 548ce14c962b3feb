//! The report and compare on runs produced by the real simulator: the findings match what the
//! profile implies (a server with 4 slots saturates at 4), power and process files add their
//! sections, and the HTML report draws every chart interactively in headless Chromium (no
//! errors, nothing fetched, desktop and phone widths).
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokengun::report::findings::Knee;
use tokengun::report::{self, ReportOptions};
use tokengun_tests::{SimConfig, SimHandle, read_csv, run, run_config, workspace_bin};

const SLOTS: u32 = 4;
const LEVELS: [u32; 5] = [1, 2, 4, 8, 16];

/// A 4-slot server with room for 4 waiting: level 8 queues, level 16 gets 503 for 8 requests.
async fn four_slot_run(out: &Path) -> PathBuf {
    let mut cfg = SimConfig::fixed(
        Duration::from_millis(150),
        Duration::from_millis(10),
        100,
        SLOTS,
    );
    cfg.engine.queue_limit = Some(4);
    let sim = SimHandle::start("127.0.0.1:0", cfg).await.unwrap();
    // Without monitor files first (they are written by hand below, over the real cycle times).
    let mut cfg = run_config(&sim.url(), "deepseek-r1:7b", &LEVELS, out);
    cfg.monitor.enabled = false;
    let report = run(cfg).await.unwrap();
    sim.stop(Duration::from_secs(1)).await;
    report.run_dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_finds_the_knee_and_best_level_of_a_four_slot_server() {
    let out = tempfile::tempdir().unwrap();
    let run_dir = four_slot_run(out.path()).await;

    let data = report::load::load_run(&run_dir).unwrap();
    let labels: Vec<&str> = data.levels.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(labels, ["1", "2", "4", "8", "16"]);
    let f = report::findings::compute(&data.levels, &ReportOptions::default().findings, false);
    let label = |i: usize| data.levels[i].label.as_str();
    // Throughput grows with concurrency up to the slots, then stays flat: the knee is 4.
    match f.knee {
        Knee::At { index, .. } => assert_eq!(label(index), "4", "{:?}", f.statements),
        other => panic!("no knee: {other:?}; {:?}", f.statements),
    }
    // 4, 8 (and 16) give the same throughput; 16 fails half its requests: the best is 4.
    assert_eq!(f.best.map(label), Some("4"), "{:?}", f.statements);
    assert_eq!(f.errors_begin.map(label), Some("16"), "{:?}", f.statements);
    assert_eq!(data.levels[4].failed, 8, "16 - 4 running - 4 waiting");
    // The timeline data show the slots: never more than 4 streams at once.
    assert_eq!(data.levels[4].max_streaming, Some(SLOTS));
    assert!(
        f.hints
            .iter()
            .any(|h| h.contains("at most 4 requests streamed at once")),
        "{:?}",
        f.hints
    );
    assert_eq!(f.most_efficient, None, "no power data, no efficiency claim");

    let written = report::report(&run_dir, None, &ReportOptions::default()).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    for needle in [
        "Best level: concurrency 4",
        "Saturation knee: concurrency 4",
        "Errors begin at concurrency 16: 8 of 16 requests failed",
        "no power.csv",
        "![Aggregate tokens/s](charts/throughput.png)",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    let names = |w: &report::Written| -> Vec<String> {
        let mut v: Vec<String> = w
            .charts
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&written),
        [
            "breakdown.png",
            "errors.png",
            "per_request.png",
            "throughput.png",
            "timeline.png",
            "ttft.png"
        ]
    );
    for c in &written.charts {
        assert!(c.exists(), "{} linked but not written", c.display());
    }

    // The monitors' files (issue 5's formats) add power, efficiency and process sections.
    write_monitor_files(&run_dir);
    let written = report::report(&run_dir, None, &ReportOptions::default()).unwrap();
    assert_eq!(
        names(&written),
        [
            "breakdown.png",
            "efficiency.png",
            "errors.png",
            "frequency.png",
            "per_request.png",
            "power.png",
            "server_cpu.png",
            "server_memory.png",
            "throughput.png",
            "timeline.png",
            "ttft.png"
        ]
    );
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    for needle in [
        "Most efficient per joule: concurrency 4",
        "Above the idle baseline (50 W)",
        "GPU: busy 100",
        "Memory climbing",
        "| mean W | J/token | tokens/J |",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }

    // Every chart renders in a real browser, at desktop and phone widths.
    if let Some(chromium) = chromium() {
        check_html_renders(&chromium, &written.html, written.charts.len());
    }
}

/// power.csv and processes.csv in the monitors' long formats, over the run's real cycle times:
/// 50 W idle, 40 W per busy slot plus 2 W per request, GPU busy 25% a slot, memory climbing.
fn write_monitor_files(run_dir: &Path) {
    let cycles = read_csv(&run_dir.join("cycles.csv"));
    let mut power = String::from("elapsed_s,cycle,agent,source,device,metric,unit,value\n");
    let mut procs = String::from(
        "elapsed_s,cycle,agent,role,pid,name,cpu_pct,rss_bytes,vsz_bytes,threads,open_fds,mem_total_bytes,load_avg_1m\n",
    );
    let gib = 1024.0 * 1024.0 * 1024.0;
    let mut t = 0.0;
    while t < 2.0 {
        power.push_str(&format!("{t:.2},baseline,a1,nvml,gpu0,power_w,W,50\n"));
        t += 0.25;
    }
    for (i, c) in cycles.iter().enumerate() {
        let x: f64 = c["level"].parse().unwrap();
        let busy_slots = x.min(f64::from(SLOTS));
        let end = t + c["duration_s"].parse::<f64>().unwrap();
        while t < end {
            let level = &c["level"];
            let w = 50.0 + 40.0 * busy_slots + 2.0 * x;
            power.push_str(&format!("{t:.2},{level},a1,nvml,gpu0,power_w,W,{w}\n"));
            power.push_str(&format!(
                "{t:.2},{level},a1,nvml,gpu0,freq_mhz,MHz,{}\n",
                1400.0 + 50.0 * busy_slots
            ));
            power.push_str(&format!(
                "{t:.2},{level},a1,nvml,gpu0,busy_pct,%,{}\n",
                25.0 * busy_slots
            ));
            procs.push_str(&format!(
                "{t:.2},{level},a1,server,4242,ollama,{},{},,,,,\n",
                30.0 * busy_slots,
                (1.0 + 0.25 * i as f64) * gib
            ));
            procs.push_str(&format!(
                "{t:.2},{level},a1,machine,,,{},{},,,,{},1.5\n",
                10.0 * busy_slots,
                4.0 * gib,
                16.0 * gib
            ));
            t += 0.1;
        }
        t += 0.3; // between cycles
    }
    std::fs::write(run_dir.join("power.csv"), power).unwrap();
    std::fs::write(run_dir.join("processes.csv"), procs).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_overlays_runs_with_their_findings_side_by_side() {
    let out = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for slots in [1u32, 2] {
        let sim = SimHandle::start(
            "127.0.0.1:0",
            SimConfig::fixed(
                Duration::from_millis(50),
                Duration::from_millis(10),
                30,
                slots,
            ),
        )
        .await
        .unwrap();
        let mut cfg = run_config(&sim.url(), "deepseek-r1:7b", &[1, 2, 4], out.path());
        cfg.run_id = Some(format!("slots-{slots}"));
        dirs.push(run(cfg).await.unwrap().run_dir);
        sim.stop(Duration::from_secs(1)).await;
    }
    let cmp = out.path().join("cmp");
    let output = Command::new(workspace_bin("tokengun"))
        .arg("compare")
        .args(&dirs)
        .args(["--label", "one slot", "--label", "two slots", "--out"])
        .arg(&cmp)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let md = std::fs::read_to_string(cmp.join("compare.md")).unwrap();
    assert!(md.contains("| one slot | two slots |"), "{md}");
    // One slot saturates at once; two slots at 2.
    assert!(md.contains("| knee | 1 | 2 |"), "{md}");
    assert!(md.contains("| best level | 1 ("), "{md}");
    for chart in [
        "compare_throughput.png",
        "compare_per_request.png",
        "compare_ttft.png",
        "compare_ttft_p99.png",
        "compare_errors.png",
    ] {
        assert!(cmp.join("charts").join(chart).is_file(), "{chart}");
    }
    assert!(!cmp.join("charts/compare_efficiency.png").exists());

    // The report subcommand on one of them, and its refusals.
    let out_r = Command::new(workspace_bin("tokengun"))
        .args(["report", "--timeline-level", "4"])
        .arg(&dirs[0])
        .output()
        .unwrap();
    assert!(
        out_r.status.success(),
        "{}",
        String::from_utf8_lossy(&out_r.stderr)
    );
    assert!(dirs[0].join("report.html").is_file());
    let bad = Command::new(workspace_bin("tokengun"))
        .args(["report", "--timeline-level", "3"])
        .arg(&dirs[0])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        err.contains("is not a level of this run; it has 1, 2, 4"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let not_run = Command::new(workspace_bin("tokengun"))
        .args(["report"])
        .arg(out.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&not_run.stderr);
    assert_eq!(not_run.status.code(), Some(1));
    assert!(
        err.contains("is not a tokengun run folder (it has no cycles.csv)"),
        "{err}"
    );
    let mismatch = Command::new(workspace_bin("tokengun"))
        .arg("compare")
        .args(&dirs)
        .args(["--label", "only one", "--out"])
        .arg(out.path().join("cmp2"))
        .output()
        .unwrap();
    assert_eq!(mismatch.status.code(), Some(2));

    if let Some(chromium) = chromium() {
        check_html_renders(&chromium, &cmp.join("compare.html"), 5);
    }
}

/// Debian's Chromium, or a skip message (never a skip under CI=true: .ci/run installs it).
fn chromium() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/chromium");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but /usr/bin/chromium is missing: .ci/run must install Debian's chromium"
    );
    eprintln!(
        "SKIP: the HTML rendering check needs headless Chromium; install it with `apt-get install -y chromium`"
    );
    None
}

/// Put first in `<head>`: records every error the page meets (script errors, failed loads of
/// any element, console.error and console.warn, unhandled rejections) before the report's code
/// runs.
const WATCH: &str = r#"<script>
window.tgErrors = [];
window.addEventListener('error', function (e) {
  tgErrors.push(e.message || ('failed to load ' + ((e.target && (e.target.src || e.target.href)) || '?')));
}, true);
window.addEventListener('unhandledrejection', function (e) { tgErrors.push('unhandled rejection: ' + e.reason); });
['error', 'warn'].forEach(function (k) {
  var orig = console[k];
  console[k] = function () {
    tgErrors.push('console.' + k + ': ' + Array.prototype.join.call(arguments, ' '));
    orig.apply(console, arguments);
  };
});
</script>"#;

/// Put last in `<body>`: once the page has loaded, writes each figure's chart (a canvas, its
/// size and how many of its pixels are drawn) and box, the page's size, how many resources it
/// fetched, and the errors seen.
const PROBE: &str = r#"<script>
window.addEventListener('load', function () {
  var rows = [];
  document.querySelectorAll('figure.chart').forEach(function (f) {
    var c = f.querySelector('canvas');
    var ink = 0;
    if (c && c.width > 0 && c.height > 0) {
      var px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (var i = 3; i < px.length; i += 4) if (px[i] > 0) ink++;
    }
    var r = f.getBoundingClientRect();
    rows.push([c ? 1 : 0, c ? c.width : 0, c ? c.height : 0, ink, Math.round(r.left),
      Math.round(r.top + window.scrollY), Math.round(r.width), Math.round(r.height)].join(','));
  });
  var p = document.createElement('pre');
  p.id = 'tg-probe';
  p.textContent = 'PROBE ' + window.innerWidth + ' ' + document.documentElement.scrollWidth + ' ' +
    document.documentElement.scrollHeight + ' ' + performance.getEntriesByType('resource').length +
    '\n' + rows.join('\n') + '\nERRORS ' + JSON.stringify(window.tgErrors) + '\nEND';
  document.body.appendChild(p);
});
</script>"#;

/// A figure's chart as the browser drew and laid it out.
#[derive(Debug)]
struct ChartBox {
    canvas: bool,
    canvas_px: (u32, u32),
    inked_px: u32,
    left: u32,
    top: u32,
    width: u32,
    height: u32,
}

/// What the probe saw of a page.
#[derive(Debug)]
struct Seen {
    viewport_w: u32,
    scroll_w: u32,
    height: u32,
    fetched: u32,
    charts: Vec<ChartBox>,
    errors: Vec<String>,
}

/// Runs Chromium headless with the given extra arguments, bounded in time; returns stdout.
fn run_chromium(chromium: &Path, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(out.path()).unwrap()
}

/// Loads `page` at `width` and returns what the probe saw.
fn probe(chromium: &Path, page: &Path, width: u32) -> Seen {
    let dom = run_chromium(
        chromium,
        &[
            format!("--window-size={width},900"),
            "--dump-dom".into(),
            format!("file://{}", page.display()),
        ],
    );
    // The probe's output (not its script, which holds the same words).
    let start = dom
        .find("<pre id=\"tg-probe\">PROBE ")
        .map(|i| i + "<pre id=\"tg-probe\">".len())
        .unwrap_or_else(|| panic!("no probe output in the DOM: {dom:.500}"));
    let text = &dom[start..dom[start..].find("\nEND").map_or(dom.len(), |e| start + e)];
    let mut lines = text.lines();
    let head: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    let mut charts = Vec::new();
    let mut errors = Vec::new();
    for l in lines.filter(|l| !l.trim().is_empty()) {
        if let Some(json) = l.strip_prefix("ERRORS ") {
            // The DOM dump escapes the pre's text as HTML.
            let json = json
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            errors = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            continue;
        }
        let v: Vec<i64> = l.split(',').map(|x| x.trim().parse().unwrap()).collect();
        let u = |i: usize| u32::try_from(v[i].max(0)).unwrap();
        charts.push(ChartBox {
            canvas: v[0] == 1,
            canvas_px: (u(1), u(2)),
            inked_px: u(3),
            left: u(4),
            top: u(5),
            width: u(6),
            height: u(7),
        });
    }
    Seen {
        viewport_w: head[0],
        scroll_w: head[1],
        height: head[2],
        fetched: head[3],
        charts,
        errors,
    }
}

/// Opens the page in headless Chromium: no console error and no failed (or any) request, one
/// drawn chart per figure (its canvas has ink), laid out within a phone's width, and ink in a
/// real screenshot. A broken image added to the page must be reported (the check can fail).
fn check_html_renders(chromium: &Path, html: &Path, charts: usize) {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("probe.html");
    let broken = r#"<img id="broken" src="data:image/png;base64,AAAA">"#;
    let text = std::fs::read_to_string(html).unwrap();
    // Interactive on purpose (uPlot inlined); the PNGs are kept for readers without scripts.
    assert!(
        text.contains("<script"),
        "the report's charts are interactive"
    );
    assert_eq!(
        text.matches("<noscript><img src=\"data:image/png;base64,")
            .count(),
        charts,
        "every chart keeps its PNG for readers without scripts"
    );
    for external in ["src=\"http", "href=\"http", "src='http", "url(http"] {
        assert!(
            !text.contains(external),
            "the page loads nothing from the network ({external})"
        );
    }
    let with_probe = text
        .replacen("<head>", &format!("<head>{WATCH}"), 1)
        .replace("</body>", &format!("{broken}{PROBE}</body>"));
    std::fs::write(&page, &with_probe).unwrap();

    let seen = probe(chromium, &page, 1100);
    assert_eq!(
        seen.fetched, 0,
        "the page fetched something: it must work offline"
    );
    assert_eq!(
        seen.errors.len(),
        1,
        "the page met errors (one expected: the broken control image): {:?}",
        seen.errors
    );
    assert!(
        seen.errors[0].contains("failed to load"),
        "{:?}",
        seen.errors
    );
    assert_eq!(seen.charts.len(), charts, "{:?}", seen.charts);
    for (i, b) in seen.charts.iter().enumerate() {
        let (w, h) = b.canvas_px;
        assert!(
            b.canvas && w >= 900 && h >= 250 && b.inked_px >= 2000,
            "chart {i} was not drawn: {b:?}"
        );
        assert!(b.width >= 900, "chart {i} laid out too small: {b:?}");
    }

    // Phone width: charts fit, and the page does not scroll sideways.
    let phone = probe(chromium, &page, 390);
    assert!(
        phone.scroll_w <= phone.viewport_w,
        "the page scrolls sideways on a phone ({} > {})",
        phone.scroll_w,
        phone.viewport_w
    );
    for (i, b) in phone.charts.iter().enumerate() {
        assert!(
            b.width <= phone.viewport_w && b.canvas_px.0 >= 250 && b.inked_px >= 1000,
            "chart {i} on a phone: {b:?} in {}",
            phone.viewport_w
        );
    }

    check_screenshot(chromium, &page, seen.height, &seen.charts);
}

/// A real screenshot of the whole page: every chart's area holds a drawing, not a blank.
fn check_screenshot(chromium: &Path, page: &Path, height: u32, charts: &[ChartBox]) {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    run_chromium(
        chromium,
        &[
            format!("--window-size=1100,{height}"),
            format!("--screenshot={}", shot.display()),
            format!("file://{}", page.display()),
        ],
    );
    let mut reader =
        png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()))
            .read_info()
            .unwrap();
    let mut px = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut px).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width, info.height);
    for (i, b) in charts.iter().enumerate() {
        assert!(
            b.top + b.height <= h && b.left + b.width <= w,
            "chart {i} outside the shot"
        );
        let mut ink = 0u64;
        let mut colours = std::collections::HashSet::new();
        for y in b.top..b.top + b.height {
            for x in b.left..b.left + b.width {
                let o = ((y * w + x) as usize) * channels;
                let p = (px[o], px[o + 1], px[o + 2]);
                if p.0 < 235 || p.1 < 235 || p.2 < 235 {
                    ink += 1;
                }
                colours.insert(p);
            }
        }
        let area = u64::from(b.width) * u64::from(b.height);
        assert!(
            ink * 100 >= area * 2 && colours.len() >= 8,
            "chart {i} looks blank in the screenshot: {ink} of {area} px inked, {} colours",
            colours.len()
        );
    }
}

/// A Mac's monitor files over the run's real cycle times, in today's columns: IOReport's SoC
/// power (40 W + 10 W a busy slot), the Ollama server and runner with their own energy
/// counters (runner 8 W a busy slot, server 1.6 W), thermal pressure moderate from level 8 and
/// heavy at 16, swap growing by 1 GiB during level 16.
fn write_mac_monitor_files(run_dir: &Path) {
    use tokengun_common::run_dir::{POWER_HEADER, PROCESSES_HEADER};
    let cycles = read_csv(&run_dir.join("cycles.csv"));
    let mut power = format!("{}\n", POWER_HEADER.join(","));
    let mut procs = format!("{}\n", PROCESSES_HEADER.join(","));
    let gib = 1024.0 * 1024.0 * 1024.0;
    let (mut t, mut soc_j, mut runner_j, mut server_j) = (0.0, 0.0, 0.0, 0.0);
    let dt = 0.1;
    for c in &cycles {
        let level = &c["level"];
        let x: f64 = level.parse().unwrap();
        let busy = x.min(f64::from(SLOTS));
        let (thermal, swap_per_s) = match x as u32 {
            0..=4 => (0, 0.0),
            5..=8 => (1, 0.0),
            _ => (2, gib / c["duration_s"].parse::<f64>().unwrap()),
        };
        let end = t + c["duration_s"].parse::<f64>().unwrap();
        let mut swap = 0.5 * gib;
        while t < end {
            let w = 40.0 + 10.0 * busy;
            soc_j += w * dt;
            runner_j += 8.0 * busy * dt;
            server_j += 1.6 * dt;
            swap += swap_per_s * dt;
            power.push_str(&format!(
                "{t:.2},{level},a1,ioreport,soc,energy_j,J,{soc_j}\n"
            ));
            power.push_str(&format!("{t:.2},{level},a1,ioreport,soc,power_w,W,{w}\n"));
            procs.push_str(&format!(
                "{t:.2},{level},a1,server,4242,ollama,5.0,{},,,,,,,{server_j},1.6,,,,,\n",
                gib
            ));
            procs.push_str(&format!(
                "{t:.2},{level},a1,runner,4243,ollama,{},{},,,,,,,{runner_j},{},,,,,\n",
                80.0 * busy,
                4.0 * gib,
                8.0 * busy
            ));
            procs.push_str(&format!(
                "{t:.2},{level},a1,machine,,mac,20.0,{},,,,{},1.5,10,,,0,,{swap},{thermal},\n",
                8.0 * gib,
                16.0 * gib
            ));
            t += dt;
        }
        t += 0.3;
    }
    std::fs::write(run_dir.join("power.csv"), power).unwrap();
    std::fs::write(run_dir.join("processes.csv"), procs).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_gives_the_servers_energy_and_marks_throttled_and_swapping_levels() {
    let out = tempfile::tempdir().unwrap();
    let run_dir = four_slot_run(out.path()).await;
    write_mac_monitor_files(&run_dir);
    let data = report::load::load_run(&run_dir).unwrap();
    let l4 = &data.levels[2];
    assert_eq!(l4.label, "4");
    // The runner's counter rose 32 W x its span; the report gives it per second.
    let runner = l4
        .process_power_w
        .iter()
        .find(|(n, _)| n == "runner ollama (4243)")
        .unwrap()
        .1;
    assert!((runner - 32.0).abs() < 1e-6, "{:?}", l4.process_power_w);
    assert_eq!(data.levels[3].thermal_pressure_max, Some(1.0));
    assert!(data.levels[4].swap_growth_bytes.unwrap() > 0.9 * 1024.0 * 1024.0 * 1024.0);
    let written = report::report(&run_dir, None, &ReportOptions::default()).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    for needle in [
        // cycles.csv had no power columns: the level's power is power.csv's mean (80 W at 4);
        // the server's processes 33.6 W of it.
        "Energy by process: at concurrency 4 the server's processes drew 42% of the measured power (33.6 W of 80 W) (runner ollama (4243) 40% of it, 32 W)",
        "Thermal pressure: concurrency 8, concurrency 16 ran throttled (thermal pressure heavy at concurrency 16)",
        "Swapping: concurrency 16 ran short of memory (swap grew by up to ",
        "## Server energy and machine pressure",
        "| 8 (throttled) |",
        "| 16 (throttled) (swapping) |",
        "runner ollama (4243): 32 W",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
}
