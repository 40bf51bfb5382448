#!/usr/bin/env python3
"""Build staging prompt files from bare git mirrors in /work/.mirror.

Reads only committed blobs (git show COMMIT:path); writes
/work/data-staging/<source>.jsonl with fields source, id, prompt, source_label.
Deterministic: no randomness, fixed commits, every-k-th sampling.
"""
import csv
import difflib
import re
import io
import json
import os
import subprocess
import sys

M = "/work/.mirror"
OUT = "/work/data-staging"
WITHHELD = os.path.join(OUT, "withheld")

# repo -> commit actually read (pinned)
COMMITS = {
    "tatsu-lab/alpaca_eval": "cd543a149df89434d8a54582c0151c0b945c3d20",
    "nlpxucan/WizardLM": "cd4b4cc022b6426aee62d51f7ae99a4a6ec9aaef",
    "yizhongw/self-instruct": "0b26ccaa415992100fa32df62d41b994cf928e23",
    "arnav-gudibande/koala-test-set": "2d4396aee3cff495382e9b0ad2521d70b177763b",
    "LAION-AI/Open-Assistant": "f1e6ed9526f5817531f3ab85441a40b3671ddccb",
    "f/awesome-chatgpt-prompts": "078df58ab884d730740cad1bd503d9e104873357",
    "openai/grade-school-math": "3101c7d5072418e28b9008a6636bde82a006892c",
    "shilliscmu/TranxConalaBaseline": "5520285387d946e826f4cc5a4a0a1bf7361355e5",
    "google-research-datasets/natural-questions": "fb26a3073b1fe636c97302890a27b491d6530130",
}


def show(repo, path):
    gd = os.path.join(M, repo.replace("/", "+"), "repo")
    return subprocess.run(
        ["git", "--git-dir", gd, "show", f"{COMMITS[repo]}:{path}"],
        check=True, capture_output=True,
    ).stdout.decode("utf-8")


def jsonl(text):
    return [json.loads(l) for l in text.splitlines() if l.strip()]


STATS = {}
GLOBAL_SEEN = set()   # cross-source dedup among the main (non-withheld) files
VICUNA = []           # blocklist: AlpacaEval's vicuna rows (never written)


def _norm(s):
    return re.sub(r"\s+", " ", s.strip().lower())


def _toks(s):
    return set(re.findall(r"[a-z0-9]+", s))


def near_vicuna(prompt):
    p = _norm(prompt)
    pt = _toks(p)
    for v, vt in VICUNA:
        if len(pt & vt) / max(1, len(pt | vt)) >= 0.6:
            return True
        if difflib.SequenceMatcher(None, p[:300], v[:300]).ratio() > 0.7:
            return True
    return False


def write(source, rows, outdir=OUT):
    """rows: iterable of (prompt, label). Skips empty, dedups identical prompts."""
    os.makedirs(outdir, exist_ok=True)
    seen = set()
    n = 0
    skipped_empty = skipped_dup = skipped_vic = skipped_xdup = 0
    main = outdir == OUT
    with open(os.path.join(outdir, f"{source}.jsonl"), "w", encoding="utf-8") as f:
        for prompt, label in rows:
            if prompt is None or not prompt.strip():
                skipped_empty += 1
                continue
            if prompt in seen:
                skipped_dup += 1
                continue
            seen.add(prompt)
            if near_vicuna(prompt):
                skipped_vic += 1
                continue
            if main:
                k = _norm(prompt)
                if k in GLOBAL_SEEN:
                    skipped_xdup += 1
                    continue
                GLOBAL_SEEN.add(k)
            n += 1
            f.write(json.dumps({"source": source, "id": f"{source}-{n}",
                                "prompt": prompt, "source_label": label},
                               ensure_ascii=False) + "\n")
    STATS[source] = dict(written=n, empty=skipped_empty, dup=skipped_dup,
                         near_vicuna=skipped_vic, cross_source_dup=skipped_xdup,
                         withheld=not main)
    return n


def join(instr, inp):
    inp = inp or ""
    return instr + ("\n\n" + inp if inp.strip() else "")


# 1. AlpacaEval (805): drop vicuna; withhold selfinstruct + koala subsets
ae = json.loads(show("tatsu-lab/alpaca_eval", "results/text_davinci_003/model_outputs.json"))
VICUNA.extend((_norm(r["instruction"]), _toks(_norm(r["instruction"])))
              for r in ae if r["dataset"] == "vicuna")
write("alpaca_eval", [(r["instruction"], None) for r in ae
                      if r["dataset"] in ("oasst", "helpful_base")])
write("alpaca_eval_selfinstruct_koala",
      [(r["instruction"], r["dataset"]) for r in ae if r["dataset"] in ("selfinstruct", "koala")],
      WITHHELD)
STATS["_alpaca_eval_counts"] = {d: sum(1 for r in ae if r["dataset"] == d)
                                for d in sorted({r["dataset"] for r in ae})}

# 2. WizardLM test set (218, field Skill)
wz = jsonl(show("nlpxucan/WizardLM", "WizardLM/data/WizardLM_testset.jsonl"))
write("wizardlm_testset", [(r["Instruction"], r.get("Skill")) for r in wz])

# 3. self-instruct seed tasks (175 human-written); label = classification flag
seeds = jsonl(show("yizhongw/self-instruct", "data/seed_tasks.jsonl"))
write("selfinstruct_seed", [
    (join(r["instruction"], (r.get("instances") or [{}])[0].get("input")),
     "classification" if r.get("is_classification") else None) for r in seeds])

# 3b. self-instruct user-oriented (252) -- withheld: README asks not to train on it
uo = jsonl(show("yizhongw/self-instruct", "human_eval/user_oriented_instructions.jsonl"))
write("selfinstruct_user_oriented", [
    (join(r["instruction"], (r.get("instances") or [{}])[0].get("input")), r.get("motivation_app"))
    for r in uo], WITHHELD)

# 4. Koala test set (180) -- withheld: README asks not to train on it
kq = jsonl(show("arnav-gudibande/koala-test-set", "koala_test_set.jsonl"))
write("koala_testset", [(r["prompt"], None) for r in kq], WITHHELD)

# 5. OpenAssistant prompts from the OA repo (manual-eval samples of real prompter messages)
base = "model/model_eval/manual/data/"
msgs = jsonl(show("LAION-AI/Open-Assistant", base + "en_100_message.jsonl"))
synthetic = {m["text"] for m in msgs if m.get("synthetic")}
t100 = [json.loads(l) for l in show("LAION-AI/Open-Assistant", base + "en_100_text.jsonl").splitlines() if l.strip()]
lot = [json.loads(l) for l in show("LAION-AI/Open-Assistant", base + "prompt_lottery_en_250_text.jsonl").splitlines() if l.strip()]
STATS["_oasst_synthetic_dropped"] = sum(1 for t in t100 if t in synthetic)
write("oasst_prompts", [(t, None) for t in t100 + lot if t not in synthetic])

# 5b. OA backend realistic seed data: root prompter messages (hh-rlhf-style helpful dialogues)
seed = json.loads(show("LAION-AI/Open-Assistant", "backend/test_data/realistic/realistic_seed_data.json"))
write("oa_seed_helpful", [(m["text"], None) for m in seed
                          if m["parent_message_id"] is None and m["role"] == "prompter"])

# 6. awesome-chatgpt-prompts (CC0), version of 2024-12-24 (before the 2025 bulk additions)
acp = list(csv.DictReader(io.StringIO(show("f/awesome-chatgpt-prompts", "prompts.csv"))))
write("awesome_chatgpt_prompts", [(r["prompt"], None) for r in acp])

# 7. GSM8K train: every 10th problem
gsm = jsonl(show("openai/grade-school-math", "grade_school_math/data/train.jsonl"))
write("gsm8k", [(r["question"], None) for r in gsm[::10]])

# 8. MBPP+ prompts as shipped in WizardLM/WizardCoder (evalplus MBPP+ 399 tasks)
mb = json.loads(show("nlpxucan/WizardLM", "WizardCoder/data/mbppplus.json"))
write("mbpp_plus", [(v, None) for _, v in mb.items()])

# 9. CoNaLa curated train: original intent (= Stack Overflow question title), every 4th unique
cn = json.loads(show("shilliscmu/TranxConalaBaseline", "conala-train.json"))
uniq = []
_s = set()
for r in cn:
    t = r.get("intent")
    if t and t not in _s:
        _s.add(t)
        uniq.append(t)
STATS["_conala_unique_intents"] = len(uniq)
write("conala", [(t, None) for t in uniq[::4]])

# 10. NQ-open dev (real Google search queries): every 6th
nq = jsonl(show("google-research-datasets/natural-questions", "nq_open/NQ-open.dev.jsonl"))
write("nq_open", [(r["question"], None) for r in nq[::6]])

json.dump(STATS, sys.stdout, indent=1)
print()
