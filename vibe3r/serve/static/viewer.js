// GlbViewer: a small WebGL viewer for the reconstruction's scene.glb (glTF 2.0 binary) — point clouds (mode 0),
// lines (1) and triangle meshes (4, drawn as edges) with vertex colours or a base colour, node matrices / TRS, orbit controls.
// It ships with the package so the server needs no CDN. Enough glTF for what vibe3r exports, not a general loader.
"use strict";

const GL_TYPES = { 5120: Int8Array, 5121: Uint8Array, 5122: Int16Array, 5123: Uint16Array, 5125: Uint32Array, 5126: Float32Array };
const NCOMP = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4, MAT4: 16 };
const NORM = { 5120: 127, 5121: 255, 5122: 32767, 5123: 65535 };

function parseGlb(buf) {
  const dv = new DataView(buf);
  if (dv.getUint32(0, true) !== 0x46546c67) throw new Error("not a GLB file");
  const length = dv.getUint32(8, true);
  let off = 12, json = null, bin = null;
  while (off + 8 <= length) {
    const n = dv.getUint32(off, true), type = dv.getUint32(off + 4, true);
    if (type === 0x4e4f534a) json = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, off + 8, n)));
    else if (type === 0x004e4942) bin = new DataView(buf, off + 8, n);
    off += 8 + n;
  }
  if (!json) throw new Error("GLB without JSON chunk");
  return { json, bin };
}

// An accessor as a Float32Array of count*ncomp values (normalised integers mapped to [0, 1]).
function readAccessor(g, i) {
  const a = g.json.accessors[i], nc = NCOMP[a.type], T = GL_TYPES[a.componentType];
  const out = new Float32Array(a.count * nc);
  if (a.bufferView === undefined) return out;
  const bv = g.json.bufferViews[a.bufferView];
  const stride = bv.byteStride || nc * T.BYTES_PER_ELEMENT;
  const base = (bv.byteOffset || 0) + (a.byteOffset || 0), dv = g.bin, size = T.BYTES_PER_ELEMENT;
  const get = { 5120: (o) => dv.getInt8(o), 5121: (o) => dv.getUint8(o), 5122: (o) => dv.getInt16(o, true),
    5123: (o) => dv.getUint16(o, true), 5125: (o) => dv.getUint32(o, true), 5126: (o) => dv.getFloat32(o, true) }[a.componentType];
  const scale = a.normalized && NORM[a.componentType] ? 1 / NORM[a.componentType] : 1;
  for (let k = 0; k < a.count; k++) for (let c = 0; c < nc; c++) out[k * nc + c] = get(base + k * stride + c * size) * scale;
  return out;
}

// 4x4 column-major matrices
const M = {
  ident: () => [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
  mul(a, b) { const o = new Array(16); for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) { let s = 0; for (let k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k]; o[c * 4 + r] = s; } return o; },
  trs(t = [0, 0, 0], q = [0, 0, 0, 1], s = [1, 1, 1]) {
    const [x, y, z, w] = q;
    return [(1 - 2 * (y * y + z * z)) * s[0], 2 * (x * y + z * w) * s[0], 2 * (x * z - y * w) * s[0], 0,
      2 * (x * y - z * w) * s[1], (1 - 2 * (x * x + z * z)) * s[1], 2 * (y * z + x * w) * s[1], 0,
      2 * (x * z + y * w) * s[2], 2 * (y * z - x * w) * s[2], (1 - 2 * (x * x + y * y)) * s[2], 0, t[0], t[1], t[2], 1];
  },
  perspective(fovy, aspect, near, far) {
    const f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
    return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0];
  },
  lookAt(eye, at, up) {
    const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]], norm = (v) => { const l = Math.hypot(...v) || 1; return v.map((x) => x / l); };
    const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
    const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    const z = norm(sub(eye, at)), x = norm(cross(up, z)), y = cross(z, x);
    return [x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0, -dot(x, eye), -dot(y, eye), -dot(z, eye), 1];
  },
};

const VS = `attribute vec3 pos; attribute vec3 col; uniform mat4 mvp; uniform float psize; varying vec3 vcol;
void main() { gl_Position = mvp * vec4(pos, 1.0); gl_PointSize = psize; vcol = col; }`;
const FS = `precision mediump float; varying vec3 vcol; void main() { gl_FragColor = vec4(vcol, 1.0); }`;

class GlbViewer {
  constructor(canvas) {
    this.canvas = canvas;
    const gl = canvas.getContext("webgl", { antialias: true, preserveDrawingBuffer: true });
    if (!gl) throw new Error("this browser has no WebGL");
    this.gl = gl;
    gl.getExtension("OES_element_index_uint");
    const sh = (type, src) => { const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s); return s; };
    const p = gl.createProgram();
    gl.attachShader(p, sh(gl.VERTEX_SHADER, VS)); gl.attachShader(p, sh(gl.FRAGMENT_SHADER, FS)); gl.linkProgram(p);
    this.prog = p;
    this.loc = { pos: gl.getAttribLocation(p, "pos"), col: gl.getAttribLocation(p, "col"), mvp: gl.getUniformLocation(p, "mvp"), psize: gl.getUniformLocation(p, "psize") };
    this.draws = []; this.pointSize = 3; this.meshesOn = true;
    this.yaw = 0; this.pitch = 0.15; this.dist = 3; this.target = [0, 0, 0]; this.radius = 1;
    this.stats = { points: 0, triangles: 0, lines: 0 };
    this._controls();
    new ResizeObserver(() => this.render()).observe(canvas);
  }

  async load(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const g = parseGlb(await r.arrayBuffer());
    const scene = g.json.scenes ? g.json.scenes[g.json.scene || 0] : { nodes: (g.json.nodes || []).map((_, i) => i) };
    const pts = [];
    const visit = (ni, parent) => {
      const n = g.json.nodes[ni];
      const local = n.matrix ? n.matrix : M.trs(n.translation, n.rotation, n.scale);
      const world = M.mul(parent, local);
      if (n.mesh !== undefined) for (const prim of g.json.meshes[n.mesh].primitives) this._addPrimitive(g, prim, world, pts);
      for (const c of n.children || []) visit(c, world);
    };
    for (const ni of scene.nodes || []) visit(ni, M.ident());
    this._frame(pts);
    this.render();
    const gl = this.gl, px = new Uint8Array(gl.drawingBufferWidth * gl.drawingBufferHeight * 4);
    gl.readPixels(0, 0, gl.drawingBufferWidth, gl.drawingBufferHeight, gl.RGBA, gl.UNSIGNED_BYTE, px);
    let lit = 0; for (let i = 0; i < px.length; i += 4) if (Math.abs(px[i] - 32) + Math.abs(px[i + 1] - 36) + Math.abs(px[i + 2] - 44) > 24) lit++;
    Object.assign(this.canvas.dataset, { ready: "1", points: this.stats.points, triangles: this.stats.triangles, litPixels: lit });
  }

  _addPrimitive(g, prim, world, pts) {
    const gl = this.gl, mode = prim.mode === undefined ? 4 : prim.mode;
    if (prim.attributes.POSITION === undefined || ![0, 1, 4].includes(mode)) return;
    const p = readAccessor(g, prim.attributes.POSITION), n = p.length / 3;
    const wp = new Float32Array(p.length);
    for (let k = 0; k < n; k++) {
      const x = p[3 * k], y = p[3 * k + 1], z = p[3 * k + 2];
      for (let r = 0; r < 3; r++) wp[3 * k + r] = world[r] * x + world[4 + r] * y + world[8 + r] * z + world[12 + r];
    }
    const col = new Float32Array(n * 3);
    if (prim.attributes.COLOR_0 !== undefined) {
      const a = g.json.accessors[prim.attributes.COLOR_0], nc = NCOMP[a.type], c = readAccessor(g, prim.attributes.COLOR_0);
      for (let k = 0; k < n; k++) for (let r = 0; r < 3; r++) col[3 * k + r] = c[nc * k + r];
    } else {
      const m = prim.material !== undefined ? g.json.materials[prim.material] : null;
      const f = (m && m.pbrMetallicRoughness && m.pbrMetallicRoughness.baseColorFactor) || [0.8, 0.8, 0.8, 1];
      for (let k = 0; k < n; k++) col.set(f.slice(0, 3), 3 * k);
    }
    const d = { mode, count: n, pos: gl.createBuffer(), col: gl.createBuffer(), idx: null, idxType: 0 };
    gl.bindBuffer(gl.ARRAY_BUFFER, d.pos); gl.bufferData(gl.ARRAY_BUFFER, wp, gl.STATIC_DRAW);
    gl.bindBuffer(gl.ARRAY_BUFFER, d.col); gl.bufferData(gl.ARRAY_BUFFER, col, gl.STATIC_DRAW);
    let ix = prim.indices !== undefined ? Uint32Array.from(readAccessor(g, prim.indices)) : null;
    if (mode === 4) {  // triangle meshes (the camera frusta) are drawn as their edges: they do not hide the points
      const tri = ix || Uint32Array.from({ length: n }, (_, k) => k);
      this.stats.triangles += tri.length / 3;
      ix = new Uint32Array(tri.length * 2);
      for (let t = 0; t < tri.length; t += 3) for (let e = 0; e < 3; e++) { ix[2 * t + 2 * e] = tri[t + e]; ix[2 * t + 2 * e + 1] = tri[t + (e + 1) % 3]; }
      d.mode = 1;
    }
    if (ix) {
      d.idx = gl.createBuffer(); d.count = ix.length;
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, d.idx); gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, ix, gl.STATIC_DRAW);
    }
    if (mode === 0) { this.stats.points += n; for (let k = 0; k < n; k++) pts.push([wp[3 * k], wp[3 * k + 1], wp[3 * k + 2]]); }
    else if (mode === 1) this.stats.lines += d.count / 2;
    this.draws.push(d);
  }

  // Orbit around the median of the points, starting behind the first camera (glTF: it sits at the origin looking down -z).
  _frame(pts) {
    if (!pts.length) return;
    const med = (i) => { const v = pts.map((p) => p[i]).sort((a, b) => a - b); return v[v.length >> 1]; };
    this.target = [med(0), med(1), med(2)];
    const d = pts.map((p) => Math.hypot(p[0] - this.target[0], p[1] - this.target[1], p[2] - this.target[2])).sort((a, b) => a - b);
    this.radius = Math.max(d[Math.floor(0.9 * (d.length - 1))], 1e-3);
    this.home = { yaw: 0, pitch: 0.15, dist: 2.2 * this.radius, target: this.target.slice() };
    Object.assign(this, this.home, { target: this.home.target.slice() });
  }

  setPointSize(s) { this.pointSize = s; this.render(); }
  showMeshes(on) { this.meshesOn = on; this.render(); }

  render() {
    const gl = this.gl, c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr)), h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    gl.viewport(0, 0, w, h);
    gl.clearColor(32 / 255, 36 / 255, 44 / 255, 1); gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    const t = this.target, cp = Math.cos(this.pitch);
    const eye = [t[0] + this.dist * cp * Math.sin(this.yaw), t[1] + this.dist * Math.sin(this.pitch), t[2] + this.dist * cp * Math.cos(this.yaw)];
    const mvp = M.mul(M.perspective(0.9, w / h, this.dist * 0.01, this.dist + 10 * this.radius), M.lookAt(eye, t, [0, 1, 0]));
    gl.useProgram(this.prog);
    gl.uniformMatrix4fv(this.loc.mvp, false, new Float32Array(mvp));
    gl.uniform1f(this.loc.psize, this.pointSize * dpr);
    for (const d of this.draws) {
      if (d.mode !== 0 && !this.meshesOn) continue;
      gl.bindBuffer(gl.ARRAY_BUFFER, d.pos); gl.enableVertexAttribArray(this.loc.pos); gl.vertexAttribPointer(this.loc.pos, 3, gl.FLOAT, false, 0, 0);
      gl.bindBuffer(gl.ARRAY_BUFFER, d.col); gl.enableVertexAttribArray(this.loc.col); gl.vertexAttribPointer(this.loc.col, 3, gl.FLOAT, false, 0, 0);
      const mode = [gl.POINTS, gl.LINES, 0, 0, gl.TRIANGLES][d.mode];
      if (d.idx) { gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, d.idx); gl.drawElements(mode, d.count, gl.UNSIGNED_INT, 0); }
      else gl.drawArrays(mode, 0, d.count);
    }
  }

  _controls() {
    const c = this.canvas; let drag = null;
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey }; c.setPointerCapture(e.pointerId); });
    c.addEventListener("pointerup", () => { drag = null; });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y; drag.x = e.clientX; drag.y = e.clientY;
      if (drag.pan) {
        const s = this.dist / c.clientHeight, cy = Math.cos(this.yaw), sy = Math.sin(this.yaw);
        this.target[0] -= s * dx * cy; this.target[2] += s * dx * sy; this.target[1] += s * dy;
      } else {
        this.yaw -= dx * 0.01; this.pitch = Math.max(-1.5, Math.min(1.5, this.pitch + dy * 0.01));
      }
      this.render();
    });
    c.addEventListener("wheel", (e) => { e.preventDefault(); this.dist *= Math.exp(e.deltaY * 0.001); this.render(); }, { passive: false });
    c.addEventListener("dblclick", () => { if (this.home) { Object.assign(this, this.home, { target: this.home.target.slice() }); this.render(); } });
  }
}
window.GlbViewer = GlbViewer;
