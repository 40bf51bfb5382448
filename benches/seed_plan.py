#!/usr/bin/env python3
"""The plain-Python way of planning a job, as seed 002 writes it: its regex
`classify_task`, its `route_model` table and its MODELS prices, summed record by
record. Used by benches/plan_e2e.sh as the baseline switchyard is compared with.

Tokens: tiktoken's o200k_base when it is importable and its vocabulary is cached
locally, else len(text) // 4 as seed 001 does. The script says which on stderr.

    python3 benches/seed_plan.py JOBS.jsonl          # prints total cost and counts
    python3 benches/seed_plan.py --accuracy EVAL.jsonl...  # seed classifier accuracy
"""
import json
import re
import sys

# --- seed 002, verbatim in substance -------------------------------------------------
MODELS = {  # name: (input $/M, output $/M)
    "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60), "deepseek-chat": (0.14, 0.28),
    "deepseek-v4-pro": (0.50, 2.19), "deepseek-reasoner": (0.55, 2.19), "glm-5.1": (0.625, 2.50),
    "glm-4-flash": (0.01, 0.04), "glm-4v": (0.50, 2.00),
}
TASK_PATTERNS = {
    "code": [r"(write|generate|create|implement|build|fix|debug)\s+(a\s+)?(function|class|script|code|program|API|endpoint)",
             r"(python|javascript|typescript|rust|go|java)\s+(code|function|script)", r"refactor\s+(this|the|my)"],
    "classification": [r"(classify|categorize|tag|label|sort|filter)\s+(the|this|these|all)",
                       r"(is this|does this|check if)\s+(a\s+)?(spam|valid|correct|legit)",
                       r"(sentiment|intent|category)\s+(analysis|detection|of)"],
    "reasoning": [r"(explain|why|how does|prove|solve|calculate|cause of)",
                  r"(reason|logic|deduce|infer|analyze)\s+(about|the|this|why)"],
    "translation": [r"(translate|convert|localize)\s+(this|the|to|from|into)",
                    r"in\s+(chinese|english|japanese|korean|french|german|spanish)"],
    "creative": [r"(write|compose|draft|create)\s+(a\s+)?(story|poem|article|blog|email|essay|narrative)",
                 r"(generate|brainstorm)\s+(ideas|topics|names|titles)"],
    "vision": [r"(describe|analyze|read|extract|what(.s| is)\s+in)\s+(this|the)\s+(image|picture|photo|screenshot|diagram)"],
}
ROUTES = {"balanced": {"code": "deepseek-v4-pro", "reasoning": "deepseek-reasoner", "classification": "glm-4-flash",
                       "translation": "glm-5.1", "creative": "glm-5.1", "general": "deepseek-chat", "vision": "glm-4v"}}


def classify_task(prompt):
    prompt_lower = prompt.lower()
    scores = {}
    for task, patterns in TASK_PATTERNS.items():
        score = sum(1 for p in patterns if re.search(p, prompt_lower))
        if score > 0:
            scores[task] = score
    if not scores:
        return "general"
    return max(scores, key=scores.get)
# -------------------------------------------------------------------------------------


def token_counter():
    try:
        import tiktoken
        enc = tiktoken.get_encoding("o200k_base")
        print("tokens: tiktoken o200k_base", file=sys.stderr)
        return lambda s: len(enc.encode(s))
    except Exception:
        print("tokens: len(text) // 4 (tiktoken not available offline)", file=sys.stderr)
        return lambda s: len(s) // 4


def plan(path):
    count = token_counter()
    total, n = 0.0, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if "prompt" in rec:
                text = (rec.get("system") or "") + rec["prompt"]
                last = rec["prompt"]
            else:
                text = "".join(m.get("content") or "" for m in rec["messages"])
                last = rec["messages"][-1].get("content") or ""
            model = ROUTES["balanced"].get(classify_task(last), "deepseek-chat")
            inp, out = MODELS[model]
            total += count(text) * inp / 1e6 + rec.get("max_tokens", 300) * out / 1e6
            n += 1
    print(f"records {n} total ${total:.6f}")


# eval category -> switchyard task, as in shared/eval/README.md; the seed calls chat "general"
EVAL_MAP = {"writing": "creative", "roleplay": "creative", "reasoning": "reasoning", "math": "reasoning",
            "fermi": "reasoning", "coding": "code", "extraction": "extraction", "generic": "general",
            "knowledge": "general"}


def accuracy(paths):
    for path in paths:
        ok = scored = 0
        for line in open(path, encoding="utf-8"):
            rec = json.loads(line)
            want = EVAL_MAP.get(rec.get("category")) or {"chat": "general"}.get(rec.get("task"), rec.get("task"))
            if want is None:
                continue
            prompt = rec["turns"][0] if "turns" in rec else rec["prompt"]
            scored += 1
            ok += classify_task(prompt) == want
        print(f"{path}: {ok}/{scored} = {100 * ok / scored:.1f}%")


if __name__ == "__main__":
    if sys.argv[1] == "--accuracy":
        accuracy(sys.argv[2:])
    else:
        plan(sys.argv[1])
