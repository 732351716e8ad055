// llama.cpp's side of scripts/check_gguf.py, through node-llama-cpp (prebuilt llama.cpp for
// Linux, macOS and Windows from npm): loads a GGUF file, tokenises texts as llama_tokenize does
// with add_special (BOS when the file says so) and without parsing special tokens, and decodes
// greedily until an end-of-generation token or `n` tokens.
//
//   node scripts/gguf/llama.mjs JOB.json   ->  JSON on stdout
//   JOB: {"model": "x.gguf", "texts": [...], "prompts": [...], "n": 24, "threads": 2}
import {readFileSync} from "node:fs";
import {getLlama} from "node-llama-cpp";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
// llama.cpp's own log lines are kept (its timings are read from them with --bench).
const logs = [];
const llama = await getLlama({gpu: false, build: "never", logLevel: "info",
  logger: (level, message) => { logs.push(message); if (level === "error" || level === "fatal") process.stderr.write(message + "\n"); }});
const model = await llama.loadModel({modelPath: job.model});
const encode = (text) => {
  const ids = Array.from(model.tokenize(text, false));
  return model.tokens.shouldPrependBosToken ? [model.tokens.bos, ...ids] : ids;
};
const tokens = (job.texts ?? []).map(encode);
if (job.bench) {
  // Timing: the prompt in one evaluation (batches of 512), then `n` single-token evaluations
  // (each feeds back a fixed token). The figures are llama.cpp's own (llama_perf_context:
  // time inside llama_decode), not node-llama-cpp's, whose asynchronous batching costs about
  // 13 ms a step here on top of them.
  const ctx = await model.createContext({contextSize: 2048, batchSize: 512, threads: job.threads ?? 2,
    performanceTracking: true});
  const seq = ctx.getSequence();
  const prompt = encode(job.bench);
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  const next = prompt[prompt.length - 1];
  for (let i = 0; i < job.n; i++) await seq.evaluateWithoutGeneratingNewTokens([next]);
  logs.length = 0;
  await ctx.printTimings();
  const text = logs.join("\n");
  const num = (re) => { const m = text.match(re); if (!m) throw new Error("no llama.cpp timings in: " + text); return [parseFloat(m[1]), parseInt(m[2])]; };
  const [ppMs, ppN] = num(/prompt eval time =\s*([\d.]+) ms \/\s*(\d+) tokens/);
  const [tgMs, tgN] = num(/\seval time =\s*([\d.]+) ms \/\s*(\d+) runs/);
  process.stdout.write(JSON.stringify({llama_cpp: llama.llamaCppRelease, prompt_tokens: ppN,
    prompt_seconds: ppMs / 1000, decode_seconds: tgMs / 1000, generated: tgN + 1}));
  process.exit(0);
}
const greedy = [];
if ((job.prompts ?? []).length) {
  const ctx = await model.createContext({contextSize: 512, threads: job.threads ?? 2});
  for (const p of job.prompts) {
    const seq = ctx.getSequence();
    const out = [];
    let stopped = null;
    for await (const t of seq.evaluate(encode(p), {temperature: 0})) {
      if (model.isEogToken(t)) { stopped = t; break; }
      out.push(t);
      if (out.length >= job.n) break;
    }
    greedy.push({ids: out, text: model.detokenize(out), stopped});
    seq.dispose();
  }
  await ctx.dispose();
}
process.stdout.write(JSON.stringify({llama_cpp: llama.llamaCppRelease, tokens, greedy}));
process.exit(0);
