#!/usr/bin/env python3
"""A scripted OpenAI-compatible provider for trying `triage eval run` and `triage policy fit`
without models: it knows the answers in an eval set and answers them with a fixed skill per
model. Used for the transcript in docs-ledger.md; not a benchmark of anything.

    python3 evals/scripted_provider.py evals/local-smoke.jsonl 8099
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Which categories each scripted model gets right; every other answer is wrong.
SKILL = {
    "tiny": {"facts"},
    "small": {"facts", "instruction", "arithmetic"},
    "large": {"facts", "instruction", "arithmetic", "json"},
}
# "small" misses every third arithmetic item, so accuracies differ by more than category.
FLAKY = {("small", "arithmetic"): 3}


def right_answer(check):
    t = check["type"]
    if t in ("contains", "exact"):
        return check["value"]
    if t == "numeric":
        return f"The answer is {check['value']:g}."
    if t == "json":
        return json.dumps({k: "x" for k in check.get("keys", [])} or [1, 2, 3])
    if t == "regex":
        return "1, 2, 3, 4, 5" if "1," in check["pattern"] else "Bonjour"
    return ""


def main():
    items = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    by_prompt = {i["prompt"]: (n, i) for n, i in enumerate(items)}

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            model = body["model"]
            prompt = body["messages"][-1]["content"]
            n, item = by_prompt.get(prompt, (0, None))
            if model not in SKILL:
                return self.reply(404, {"error": {"message": f"no model {model}", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
            cat = item["category"] if item else ""
            every = FLAKY.get((model, cat))
            ok = cat in SKILL[model] and not (every and n % every == 0)
            text = right_answer(item["check"]) if ok and item else "I am not sure."
            words = len(text.split())
            self.reply(200, {
                "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(prompt.split()) + 8, "completion_tokens": words, "total_tokens": 0},
            })

        def reply(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()


if __name__ == "__main__":
    main()
