// ort_bench.js — ONNX Runtime's side of the engine benchmark (npm onnxruntime-node, installed under
// bench/ with `npm install --ignore-scripts`). Same protocol and output line as bench_engine.c.
// Usage: node ort_bench.js MODEL.onnx THREADS [B1_RUNS] [BATCH] [BATCH_RUNS]
'use strict';
const path = require('path');
const ort = require(path.join(__dirname, '..', 'node_modules', 'onnxruntime-node'));

async function runBatch(session, inputName, dims, batch, runs) {
  const shape = dims.map((d, i) => (i === 0 ? batch : (typeof d === 'number' && d > 0 ? d : 1)));
  const n = shape.reduce((a, b) => a * b, 1);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sin(i * 0.001);
  const feeds = { [inputName]: new ort.Tensor('float32', x, shape) };
  const times = [];
  for (let r = -2; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    if (r >= 0) times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return times;
}

(async () => {
  const [model, threadsArg, b1Arg, batchArg, bnArg] = process.argv.slice(2);
  const threads = parseInt(threadsArg, 10), b1Runs = parseInt(b1Arg || '20', 10);
  const batch = parseInt(batchArg || '8', 10), bnRuns = parseInt(bnArg || '5', 10);
  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const inputName = session.inputNames[0];
  const meta = session.inputMetadata ? session.inputMetadata[0] : null;
  const dims = meta && meta.shape ? meta.shape : [1, 3, 224, 224];
  const t1 = await runBatch(session, inputName, dims, 1, b1Runs);
  const tn = await runBatch(session, inputName, dims, batch, bnRuns);
  const sorted = (a) => a.slice().sort((p, q) => p - q);
  const s1 = sorted(t1), sn = sorted(tn);
  const mean = t1.reduce((a, b) => a + b, 0) / t1.length;
  const rss = process.resourceUsage().maxRSS / 1024;
  console.log(`load_ms=${loadMs.toFixed(1)} b1_p50_ms=${s1[Math.floor(b1Runs / 2)].toFixed(2)} ` +
    `b1_mean_ms=${mean.toFixed(2)} b1_min_ms=${s1[0].toFixed(2)} ` +
    `b${batch}_ips=${(batch / (sn[Math.floor(bnRuns / 2)] / 1000)).toFixed(2)} peak_rss_mb=${rss.toFixed(0)}`);
})().catch((e) => { console.error('ort_bench:', e.message || e); process.exit(1); });
