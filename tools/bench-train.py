#!/usr/bin/env python3
"""PyTorch's side of tools/bench-train.sh: full finetuning steps of a model folder on the CPU in
float32 (eager attention), the same work as `mergekit-c finetune`: forward, cross-entropy on the
shifted tokens, backward, clip_grad_norm_, AdamW, for STEPS steps of BATCH rows of SEQ tokens.
Prints the tokens/s of each step after the first (one line, space-separated).
DEVICE cuda (tools/bench-cuda.sh): the same on the GPU, DTYPE float32 or bfloat16 (autocast).

    bench-train.py MODEL BATCH SEQ STEPS THREADS [DEVICE [DTYPE]]
"""
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    path, batch, seq, steps, threads = sys.argv[1], *map(int, sys.argv[2:6])
    device = sys.argv[6] if len(sys.argv) > 6 else "cpu"
    autocast = len(sys.argv) > 7 and sys.argv[7] == "bfloat16"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=False)
    vocab = model.config.vocab_size
    rates = []
    for s in range(steps):
        tok = torch.randint(3, vocab, (batch, seq), device=device)
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            logits = model(tok).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), tok[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device != "cpu":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if s:
            rates.append(batch * seq / dt)
    print(" ".join(f"{r:.1f}" for r in rates))


if __name__ == "__main__":
    sys.exit(main())
