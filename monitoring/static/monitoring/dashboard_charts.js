/* The pool health dashboard's charts, drawn by uPlot (monitoring/static/vendor/uplot/, MIT).
 *
 * Each pool card carries its series as JSON (Django's json_script: data, not script, so the page's
 * Content-Security-Policy "script-src 'self'" needs no exception). They are the points and buckets
 * the server's SVG is drawn from (monitoring/charts.py chart_series); the stock chart's last point is
 * the live one the tiles show. The SVG stays on the page and is hidden only once a chart is drawn,
 * so without JavaScript (or if this script fails) the page still has its charts. */
(function () {
  'use strict';
  if (typeof uPlot === 'undefined') { return; }

  function niceMax(v) {
    if (!(v > 0)) { return 1; }
    var mag = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) { if (v <= steps[i] * mag) { return steps[i] * mag; } }
    return 10 * mag;
  }
  function fmt(v) {
    if (v == null) { return '-'; }
    if (Math.abs(v) >= 1e6) { return +(v / 1e6).toFixed(2) + 'M'; }
    if (Math.abs(v) >= 1e3) { return +(v / 1e3).toFixed(2) + 'k'; }
    return String(+v.toPrecision(3));
  }
  function ticks(u, splits) { return splits.map(fmt); }
  function legendValue(u, v) { return fmt(v); }
  function zeroTo(extra) {
    return function (u, min, max) { return [0, niceMax(Math.max(max || 0, extra || 0))]; };
  }

  // 24-hour times in the site's time zone, as the SVG labels them (with the weekday beyond a day).
  function timeAxis(spec) {
    var label = uPlot.fmtDate(spec.end - spec.start > 86400 ? '{WWW} {HH}:{mm}' : '{HH}:{mm}');
    return {values: function (u, splits) { return splits.map(function (ts) { return label(zoned(spec, ts)); }); }};
  }
  function zoned(spec, ts) { return uPlot.tzDate(new Date(ts * 1e3), spec.tz); }

  function base(spec, el, height) {
    return {
      width: Math.max(el.clientWidth, 320), height: height,
      tzDate: function (ts) { return zoned(spec, ts); },
      cursor: {drag: {x: true, y: false}},
      scales: {x: {time: true, range: function () { return [spec.start, spec.end]; }}}
    };
  }
  var TIME = {label: 'time', value: '{YYYY}-{MM}-{DD} {HH}:{mm}'};

  function stockChart(spec, el) {
    var s = spec.stock;
    var opts = base(spec, el, 230);
    opts.scales.y = {range: zeroTo(s.target)};
    opts.scales.r = {range: zeroTo(0)};
    opts.series = [
      TIME,
      {label: 'available pairs', scale: 'y', stroke: '#2b6cb0', width: 1.6, fill: 'rgba(190,227,248,0.6)',
       value: legendValue},
      {label: 'consumption / h', scale: 'r', stroke: '#c05621', width: 1.6, value: legendValue, spanGaps: false},
      {label: 'low watermark', scale: 'y', stroke: '#d69e2e', width: 1, dash: [4, 3], points: {show: false},
       value: legendValue}
    ];
    opts.axes = [
      timeAxis(spec),
      {scale: 'y', label: 'available', stroke: '#2b6cb0', values: ticks, size: 56},
      {scale: 'r', label: 'consumption / h', stroke: '#c05621', side: 1, grid: {show: false}, values: ticks, size: 56}
    ];
    var data = [s.x, s.available, s.consumption, s.x.map(function () { return s.low_watermark; })];
    return new uPlot(opts, data, el);
  }

  function activityChart(spec, el) {
    var a = spec.activity;
    var opts = base(spec, el, 190);
    opts.scales.y = {range: zeroTo(0)};
    opts.scales.c = {range: zeroTo(0)};
    opts.series = [
      TIME,
      {label: 'refilled per ' + spec.per, scale: 'y', stroke: '#2f855a', fill: '#68d391', width: 1,
       paths: uPlot.paths.bars({size: [0.9, 40]}), points: {show: false}, value: legendValue},
      {label: 'TOME calls per ' + spec.per, scale: 'c', stroke: '#6b46c1', width: 1.6, value: legendValue}
    ];
    opts.axes = [
      timeAxis(spec),
      {scale: 'y', label: 'refilled per ' + spec.per, stroke: '#2f855a', values: ticks, size: 56},
      {scale: 'c', label: 'TOME calls per ' + spec.per, stroke: '#6b46c1', side: 1, grid: {show: false},
       values: ticks, size: 56}
    ];
    return new uPlot(opts, [a.x, a.refilled, a.tome_calls], el);
  }

  var drawn = [];
  function draw(card, spec, key, build) {
    var el = card.querySelector('[data-testid="' + key + '-uplot"]');
    if (!el || !spec[key]) { return; }
    drawn.push({el: el, plot: build(spec, el)});
    card.querySelectorAll('[data-fallback="' + key + '"]').forEach(function (node) { node.hidden = true; });
  }

  document.querySelectorAll('section.tp-card').forEach(function (card) {
    var json = card.querySelector('script[type="application/json"]');
    if (!json) { return; }
    var spec = JSON.parse(json.textContent);
    draw(card, spec, 'stock', stockChart);
    draw(card, spec, 'activity', activityChart);
  });

  var pending = null;
  window.addEventListener('resize', function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      drawn.forEach(function (d) { d.plot.setSize({width: Math.max(d.el.clientWidth, 320), height: d.plot.height}); });
    }, 100);
  });
})();
