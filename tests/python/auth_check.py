"""The gateway's auth errors through the official openai SDK's own exception classes.

Usage: auth_check.py BASE_URL GOOD_KEY NARROW_KEY BROKE_KEY
  GOOD_KEY may call `triage`; NARROW_KEY only the expert `a`; BROKE_KEY is over budget.
"""
import sys

import openai

base_url, good, narrow, broke = sys.argv[1:5]
msgs = [{"role": "user", "content": "Say hello."}]


def client(key):
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


r = client(good).chat.completions.create(model="triage", messages=msgs)
assert r.choices[0].message.content, r

try:
    client("sk-triage-not-a-real-key").chat.completions.create(model="triage", messages=msgs)
    raise AssertionError("expected AuthenticationError")
except openai.AuthenticationError as err:
    assert err.status_code == 401 and err.code == "invalid_api_key", err.body

try:
    client(narrow).chat.completions.create(model="triage", messages=msgs)
    raise AssertionError("expected PermissionDeniedError")
except openai.PermissionDeniedError as err:
    assert err.status_code == 403 and err.code == "model_not_allowed" and err.param == "model", err.body

try:
    client(broke).chat.completions.create(model="triage", messages=msgs)
    raise AssertionError("expected RateLimitError")
except openai.RateLimitError as err:
    assert err.status_code == 429 and err.code == "insufficient_quota" and err.type == "insufficient_quota", err.body
    assert err.response.headers.get("retry-after"), dict(err.response.headers)

try:
    client(broke).embeddings.create(model="a", input="x")
    raise AssertionError("expected RateLimitError")
except openai.RateLimitError as err:
    assert err.code == "insufficient_quota", err.body

print("auth checks passed")
