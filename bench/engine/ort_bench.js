// ort_bench.js — ONNX Runtime's side of the engine benchmarks (npm onnxruntime-node, installed under
// bench/ with `npm install --ignore-scripts`). Same protocol, options and output line as bench_engine.c
// (warm-up, run budget, --skip-batch-over, --ref with PyTorch's output; "load_error=..." when the model
// does not load).
// Usage: node ort_bench.js MODEL.onnx THREADS [B1_RUNS] [BATCH] [BATCH_RUNS] [--budget SECONDS]
//                          [--skip-batch-over SECONDS] [--ref INPUT.npy OUTPUT.npy]
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, '..', 'node_modules', 'onnxruntime-node'));

// a little-endian float32 .npy file (format 1.x/2.x/3.x, C order) as {shape, data}
function readNpy(file) {
  const b = fs.readFileSync(file);
  if (b.length < 10 || b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = b[6];
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = b.toString('latin1', start, start + hlen);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header)) {
    throw new Error(`${file}: only little-endian float32 in C order is read`);
  }
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').map((s) => s.trim()).filter((s) => s)
    .map((s) => parseInt(s, 10));
  const n = shape.reduce((a, c) => a * c, 1);
  const off = start + hlen;
  const data = new Float32Array(b.buffer.slice(b.byteOffset + off, b.byteOffset + off + 4 * n));
  return { shape, data };
}

async function runOnce(session, feeds) {
  const t0 = process.hrtime.bigint();
  await session.run(feeds);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function runBatch(session, inputName, dims, batch, runs, budgetS) {
  const shape = dims.map((d, i) => (i === 0 ? batch : (typeof d === 'number' && d > 0 ? d : 1)));
  const n = shape.reduce((a, b) => a * b, 1);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sin(i * 0.001);
  const feeds = { [inputName]: new ort.Tensor('float32', x, shape) };
  const w = await runOnce(session, feeds);
  if (w < 2000) await runOnce(session, feeds);
  const times = [];
  let spent = 0;
  while (times.length < runs && (times.length === 0 || spent < budgetS * 1000)) {
    const ms = await runOnce(session, feeds);
    times.push(ms);
    spent += ms;
  }
  return times.sort((p, q) => p - q);
}

async function checkRef(session, inputName, inPath, outPath) {
  const x = readNpy(inPath), ref = readNpy(outPath);
  const res = await session.run({ [inputName]: new ort.Tensor('float32', x.data, x.shape) });
  const y = res[session.outputNames[0]].data;
  if (y.length !== ref.data.length) throw new Error('the output does not have the reference\'s size');
  let e = 0, lo = Infinity, hi = -Infinity;
  for (let i = 0; i < y.length; i++) {
    const d = Math.abs(y[i] - ref.data[i]);
    e = Number.isNaN(d) ? Infinity : Math.max(e, d);
    lo = Math.min(lo, ref.data[i]);
    hi = Math.max(hi, ref.data[i]);
  }
  const g = (v) => Number(v.toPrecision(3));
  return ` max_abs_err=${g(e)} out_range=${Number((hi - lo).toPrecision(4))} rel_err=${g(hi > lo ? e / (hi - lo) : e)}`;
}

(async () => {
  const pos = [];
  let budgetS = 1e9, skipOverS = 0, refIn = null, refOut = null;
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--budget') budgetS = parseFloat(argv[++i]);
    else if (argv[i] === '--skip-batch-over') skipOverS = parseFloat(argv[++i]);
    else if (argv[i] === '--ref') { refIn = argv[++i]; refOut = argv[++i]; } else pos.push(argv[i]);
  }
  const [model, threadsArg, b1Arg, batchArg, bnArg] = pos;
  const threads = parseInt(threadsArg, 10), b1Runs = parseInt(b1Arg || '20', 10);
  const batch = parseInt(batchArg || '8', 10), bnRuns = parseInt(bnArg || '5', 10);
  const t0 = process.hrtime.bigint();
  let session;
  try {
    session = await ort.InferenceSession.create(model, {
      intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
  } catch (e) {
    console.log(`load_error=${String(e.message || e).split('\n')[0]}`);
    process.exit(1);
  }
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const inputName = session.inputNames[0];
  const meta = session.inputMetadata ? session.inputMetadata[0] : null;
  const dims = meta && meta.shape ? meta.shape : [1, 3, 224, 224];
  const t1 = await runBatch(session, inputName, dims, 1, b1Runs, budgetS);
  const skip = skipOverS > 0 && t1[0] > skipOverS * 1000;
  const tn = skip ? [] : await runBatch(session, inputName, dims, batch, bnRuns, budgetS);
  const mean = t1.reduce((a, b) => a + b, 0) / t1.length;
  const rss = process.resourceUsage().maxRSS / 1024;
  let line = `load_ms=${loadMs.toFixed(1)} b1_p50_ms=${t1[Math.floor(t1.length / 2)].toFixed(2)} ` +
    `b1_mean_ms=${mean.toFixed(2)} b1_min_ms=${t1[0].toFixed(2)} b1_runs=${t1.length} ` +
    (skip ? `b${batch}_ips=skipped b${batch}_runs=0`
      : `b${batch}_ips=${(batch / (tn[Math.floor(tn.length / 2)] / 1000)).toFixed(2)} b${batch}_runs=${tn.length}`) +
    ` peak_rss_mb=${rss.toFixed(0)}`;
  if (refIn) line += await checkRef(session, inputName, refIn, refOut);
  console.log(line);
})().catch((e) => { console.error('ort_bench:', e.message || e); process.exit(1); });
