"""Fine-tune SmolLM2-135M-Instruct (the embedded offline model) on this example's training split, on CPU.

    python examples/finetune_local/train.py [--steps 40] [--save-every 20] [--out examples/finetune_local/runs]

Supervised fine-tuning with the model's chat template: the question is the user turn, the best answer
the assistant turn, and only the answer's tokens (with the end-of-turn marker) are trained on -- the
same tokens ``judge eval``'s ``loss`` metric scores. Checkpoints (weights and tokenizer, no optimizer
state) go to ``OUT/checkpoint-<step>``; a few dozen steps take a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--save-every", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", type=Path, default=HERE / "runs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from judge.local.lm import answer_requests
    from judge.local.models import smollm2_path

    torch.manual_seed(args.seed)
    base = str(smollm2_path())
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = [json.loads(line) for line in (HERE / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    requests = answer_requests(
        tok, [[{"role": "user", "content": r["input"]}] for r in rows], [r["reference"] for r in rows]
    )
    dataset = [{"input_ids": ids, "labels": [-100] * first + ids[first:]} for ids, first in requests]

    def collate(batch: list[dict]) -> dict:
        width = max(len(b["input_ids"]) for b in batch)
        pad = tok.pad_token_id
        ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[row, :n] = torch.tensor(b["input_ids"])
            labels[row, :n] = torch.tensor(b["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    targs = TrainingArguments(
        output_dir=str(args.out),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        save_strategy="steps",
        save_steps=args.save_every,
        save_only_model=True,
        logging_steps=5,
        report_to=[],
        use_cpu=True,
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=dataset, data_collator=collate, processing_class=tok)
    trainer.train()
    print(f"checkpoints in {args.out}: {', '.join(sorted(p.name for p in args.out.glob('checkpoint-*')))}")


if __name__ == "__main__":
    main()
