// Line charts drawn as SVG: one polyline per series, one vertex per point of the series (nothing is smoothed or
// dropped here; the API already bounds the number of points).

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Up to `count` round tick values covering [lo, hi].
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function label(value) {
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(1);
  return String(Number(value.toPrecision(4)));
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === hi) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.05;
    return [lo - pad, hi + pad];
  }
  return [lo, hi];
}

// series: [{name, label, points: [[x, y], ...], markers}] → an <svg> (or a note when there is nothing to draw).
export function lineChart({ title, series, width = 640, height = 240, xLabel = 'step' }) {
  const drawn = series.filter((s) => s.points.length > 0);
  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': title, 'data-chart': title,
  });
  root.append(svg('title', {}, title));
  const m = { left: 56, right: 12, top: 22, bottom: 34 };
  const w = width - m.left - m.right;
  const h = height - m.top - m.bottom;
  root.append(svg('text', { x: m.left, y: 14, class: 'chart-title' }, title));
  if (!drawn.length) {
    root.append(svg('text', { x: width / 2, y: height / 2, class: 'chart-empty', 'text-anchor': 'middle' },
      'nothing logged yet'));
    return root;
  }
  const [x0, x1] = extent(drawn.flatMap((s) => s.points.map((p) => p[0])));
  const [y0, y1] = extent(drawn.flatMap((s) => s.points.map((p) => p[1])));
  const sx = (x) => m.left + ((x - x0) / (x1 - x0)) * w;
  const sy = (y) => m.top + h - ((y - y0) / (y1 - y0)) * h;

  const grid = svg('g', { class: 'grid' });
  for (const t of ticks(y0, y1)) {
    grid.append(svg('line', { x1: m.left, x2: m.left + w, y1: sy(t), y2: sy(t) }));
    grid.append(svg('text', { x: m.left - 6, y: sy(t) + 4, 'text-anchor': 'end' }, label(t)));
  }
  for (const t of ticks(x0, x1, 6)) {
    grid.append(svg('line', { x1: sx(t), x2: sx(t), y1: m.top, y2: m.top + h }));
    grid.append(svg('text', { x: sx(t), y: m.top + h + 16, 'text-anchor': 'middle' }, label(t)));
  }
  grid.append(svg('text', { x: m.left + w, y: height - 4, 'text-anchor': 'end' }, xLabel));
  root.append(grid);
  root.append(svg('rect', { x: m.left, y: m.top, width: w, height: h, class: 'frame' }));

  drawn.forEach((s, i) => {
    const vertices = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
    root.append(svg('polyline', {
      points: vertices, class: `line line-${i}`, 'data-series': s.name, 'data-count': s.points.length,
    }));
    if (s.markers || s.points.length === 1) {
      const dots = svg('g', { class: `dots line-${i}`, 'data-series': s.name });
      for (const [x, y] of s.points) {
        const dot = svg('circle', { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 3 });
        dot.append(svg('title', {}, `${s.label} at ${xLabel} ${x}: ${label(y)}`));
        dots.append(dot);
      }
      root.append(dots);
    }
    const lx = m.left + 8 + i * 130;
    root.append(svg('rect', { x: lx, y: m.top + 6, width: 12, height: 3, class: `swatch line-${i}` }));
    root.append(svg('text', { x: lx + 16, y: m.top + 11, class: 'legend' }, s.label));
  });
  return root;
}

// The points of `field` in a metrics answer, as [step, value] pairs (nulls left out).
export function pick(points, field) {
  return points.filter((p) => p[field] !== null && p[field] !== undefined).map((p) => [p.step, p[field]]);
}
