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
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: job.model});
const encode = (text) => {
  const ids = Array.from(model.tokenize(text, false));
  return model.tokens.shouldPrependBosToken ? [model.tokens.bos, ...ids] : ids;
};
const tokens = (job.texts ?? []).map(encode);
if (job.bench) {
  // Timing: the prompt in one evaluation (batches of 512), then `n` single-token evaluations
  // with no sampling in JavaScript (each feeds back a fixed token), so the figures are
  // close to llama.cpp's decode steps. Each step still goes through node-llama-cpp's
  // asynchronous batching, which alone caps a 1M-parameter model near 75 tokens/s here.
  const ctx = await model.createContext({contextSize: 2048, batchSize: 512, threads: job.threads ?? 2});
  const seq = ctx.getSequence();
  const prompt = encode(job.bench);
  const t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  const t1 = performance.now();
  const next = prompt[prompt.length - 1];
  for (let i = 0; i < job.n; i++) await seq.evaluateWithoutGeneratingNewTokens([next]);
  const t2 = performance.now();
  process.stdout.write(JSON.stringify({llama_cpp: llama.llamaCppRelease, prompt_tokens: prompt.length,
    prompt_seconds: (t1 - t0) / 1000, decode_seconds: (t2 - t1) / 1000, generated: job.n + 1}));
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
