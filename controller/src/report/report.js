// tokengun report: draws every figure's interactive chart from the JSON in #tg-data with uPlot.
// Hover shows exact values in the legend, a click on a legend entry hides its series, a drag
// zooms (double-click resets). The timeline explorer picks a level and shows each request's
// waiting and streaming bars with a tick per token. Nothing is fetched.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tg-data").textContent);

  function fmt(v) {
    if (v == null || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 0.1) return v.toFixed(3);
    return v.toPrecision(3);
  }

  function size(el) {
    var w = Math.max(280, Math.floor(el.getBoundingClientRect().width));
    return { width: w, height: Math.round(Math.min(420, Math.max(260, w * 0.5))) };
  }

  // Aligned columns for uPlot: the sorted union of every series' x, null where a series has none.
  function align(series) {
    var xs = {};
    series.forEach(function (s) { s.points.forEach(function (p) { xs[p[0]] = true; }); });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var cols = [x];
    series.forEach(function (s) {
      var at = {};
      s.points.forEach(function (p) { at[p[0]] = p[1]; });
      cols.push(x.map(function (v) { return v in at ? at[v] : null; }));
    });
    return cols;
  }

  // Vertical marks, a horizontal reference and shaded spans, drawn under the series.
  function decorations(d) {
    return function (u) {
      var ctx = u.ctx, top = u.bbox.top, h = u.bbox.height, left = u.bbox.left, w = u.bbox.width;
      ctx.save();
      (d.spans || []).forEach(function (s, i) {
        var x0 = u.valToPos(s[1], "x", true), x1 = u.valToPos(s[2], "x", true);
        ctx.fillStyle = i % 2 ? "rgba(0,0,0,0.035)" : "rgba(0,0,0,0.07)";
        ctx.fillRect(x0, top, Math.max(1, x1 - x0), h);
      });
      ctx.setLineDash([6, 4]);
      ctx.strokeStyle = "#777";
      ctx.fillStyle = "#333";
      ctx.font = "12px sans-serif";
      (d.marks || []).forEach(function (m) {
        var x = u.valToPos(m[0], "x", true);
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
        ctx.fillText(m[1], x + 4, top + 14);
      });
      if (d.hline) {
        var y = u.valToPos(d.hline[0], "y", true);
        ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + w, y); ctx.stroke();
        ctx.fillText(d.hline[1], left + 4, y - 4);
      }
      ctx.restore();
    };
  }

  function lines(el, d) {
    var cols = align(d.series);
    var ymax = 0;
    cols.slice(1).forEach(function (c) { c.forEach(function (v) { if (v != null && v > ymax) ymax = v; }); });
    if (d.hline && d.hline[0] > ymax) ymax = d.hline[0];
    var dots = cols[0].length <= 64;
    var opts = Object.assign(size(el), {
      title: d.title,
      scales: {
        x: d.log_x ? { time: false, distr: 3, log: 2 } : { time: false },
        y: { range: function () { return [0, ymax > 0 ? ymax * 1.08 : 1]; } }
      },
      axes: [{ label: d.x_title }, { label: d.y_title, values: function (u, v) { return v.map(fmt); } }],
      series: [{ label: d.x_title, value: function (u, v) { return fmt(v); } }].concat(
        d.series.map(function (s) {
          return { label: s.name, stroke: s.color, width: 2, spanGaps: true,
            points: { show: dots, size: 6 }, value: function (u, v) { return fmt(v); } };
        })),
      cursor: { drag: { x: true, y: false } },
      hooks: { drawAxes: [decorations(d)] }
    });
    return new uPlot(opts, cols, el);
  }

  // Stacked bars: each layer drawn as the running total, the top layer first so each shows.
  function bars(el, d) {
    var n = d.labels.length;
    var x = d.labels.map(function (_, i) { return i; });
    var totals = x.map(function () { return 0; });
    var stacked = d.series.map(function (s) {
      return x.map(function (i) {
        var p = s.points[i];
        totals[i] += p ? p[1] : 0;
        return totals[i];
      });
    });
    var order = d.series.map(function (_, k) { return k; }).reverse();
    var barPaths = uPlot.paths.bars({ size: [0.6, 80] });
    var opts = Object.assign(size(el), {
      title: d.title,
      scales: { x: { time: false, range: [-0.5, n - 0.5] },
        y: { range: function () { return [0, Math.max.apply(null, totals.concat([1e-9])) * 1.08]; } } },
      axes: [
        { label: d.x_title, splits: function () { return x; },
          values: function (u, v) { return v.map(function (i) { return d.labels[i] || ""; }); } },
        { label: d.y_title, values: function (u, v) { return v.map(fmt); } }
      ],
      series: [{ label: d.x_title, value: function (u, i) { return i == null ? "–" : d.labels[i]; } }].concat(
        order.map(function (k) {
          var s = d.series[k];
          return { label: s.name, fill: s.color, stroke: s.color, paths: barPaths, points: { show: false },
            value: function (u, v, si, i) { return i == null ? "–" : fmt(s.points[i] ? s.points[i][1] : 0); } };
        })),
      cursor: { drag: { x: true, y: false } }
    });
    return new uPlot(opts, [x].concat(order.map(function (k) { return stacked[k]; })), el);
  }

  // The per-request timeline of one level: bars drawn in a hook, the request under the cursor
  // described below the chart.
  function timelineChart(host, level, info) {
    var reqs = level.requests;
    var n = Math.max(1, reqs.length);
    var t0 = 0, t1 = 1e-3;
    reqs.forEach(function (r) { t0 = Math.min(t0, r.start_s); t1 = Math.max(t1, r.end_s); });
    var draw = function (u) {
      var ctx = u.ctx;
      ctx.save();
      ctx.beginPath();
      ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
      ctx.clip();
      reqs.forEach(function (r, i) {
        var row = n - 1 - i;
        var ya = u.valToPos(row + 0.85, "y", true), yb = u.valToPos(row + 0.15, "y", true);
        var hgt = Math.max(1, yb - ya);
        var xs = u.valToPos(r.start_s, "x", true), xe = u.valToPos(r.end_s, "x", true);
        if (r.failed) {
          ctx.fillStyle = "#d62728";
          ctx.fillRect(xs, ya, Math.max(1, xe - xs), hgt);
          return;
        }
        var ft = r.first_token_s == null ? r.end_s : r.first_token_s;
        var xf = u.valToPos(ft, "x", true);
        ctx.fillStyle = "#ffaa3c";
        ctx.fillRect(xs, ya, Math.max(1, xf - xs), hgt);
        ctx.fillStyle = "#1f77b4";
        ctx.fillRect(xf, ya, Math.max(1, xe - xf), hgt);
        if (hgt >= 3) {
          ctx.fillStyle = "rgba(0,0,0,0.55)";
          r.tokens_s.forEach(function (t) { ctx.fillRect(u.valToPos(t, "x", true), ya, 1, hgt); });
        }
      });
      ctx.restore();
    };
    var describe = function (u) {
      var top = u.cursor.top;
      if (top == null || top < 0) { info.textContent = ""; return; }
      var i = n - 1 - Math.floor(u.posToVal(top, "y"));
      var r = reqs[i];
      if (!r) { info.textContent = ""; return; }
      var wait = (r.first_token_s == null ? r.end_s : r.first_token_s) - r.start_s;
      info.textContent = "request " + r.id + (r.failed ? " (failed)" : "") + ": starts " + fmt(r.start_s) +
        " s, waits " + fmt(wait) + " s, streams " + fmt(r.end_s - r.start_s - wait) + " s" +
        (r.tokens ? ", " + r.tokens + " tokens" : "");
    };
    var opts = Object.assign(size(host), {
      title: "Requests of level " + level.label + (level.total > reqs.length ?
        " (the first " + reqs.length + " of " + level.total + ")" : ""),
      scales: { x: { time: false, range: function (u, a, b) { return [a, b]; } },
        y: { range: [0, n] } },
      axes: [{ label: "seconds from the level's start" },
        { label: "requests (first on top)", values: function (u, v) {
          return v.map(function (y) { return y % 1 === 0 && y < n ? String(n - y) : ""; }); } }],
      legend: { show: false },
      series: [{}, { label: "requests", stroke: "transparent", points: { show: false } }],
      cursor: { drag: { x: true, y: false }, points: { show: false } },
      hooks: { draw: [draw], setCursor: [describe] }
    });
    return new uPlot(opts, [[t0, t1 * 1.02], [null, null]], host);
  }

  function timeline(el, d) {
    var pick = document.createElement("div");
    pick.className = "tg-pick";
    var label = document.createElement("label");
    label.textContent = "Level: ";
    var select = document.createElement("select");
    d.levels.forEach(function (l, i) {
      var o = document.createElement("option");
      o.value = String(i);
      o.textContent = l.label + " (" + l.total + " requests)";
      select.appendChild(o);
    });
    select.value = String(d.chosen);
    label.appendChild(select);
    pick.appendChild(label);
    var key = document.createElement("span");
    key.className = "tg-key";
    key.innerHTML = "<span style=\"background:#ffaa3c\"></span>waiting<span style=\"background:#1f77b4\"></span>streaming" +
      "<span style=\"background:#d62728\"></span>failed<span style=\"background:#555;width:2px\"></span>a token";
    pick.appendChild(key);
    var host = document.createElement("div");
    var info = document.createElement("div");
    info.className = "tg-info";
    el.appendChild(pick);
    el.appendChild(host);
    el.appendChild(info);
    var chart = null;
    var show = function () {
      if (chart) chart.destroy();
      chart = timelineChart(host, d.levels[Number(select.value)] || d.levels[0], info);
      el.tgChart = chart;
    };
    select.addEventListener("change", show);
    show();
    return { setSize: function (s) { if (chart) chart.setSize(s); }, host: host };
  }

  var charts = [];
  document.querySelectorAll(".ichart").forEach(function (el) {
    var d = data[Number(el.getAttribute("data-i"))];
    if (!d) return;
    var c = d.kind === "lines" ? lines(el, d) : d.kind === "bars" ? bars(el, d) : timeline(el, d);
    charts.push([el, c]);
  });
  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      charts.forEach(function (p) { p[1].setSize(size(p[0])); });
    }, 100);
  });
})();
