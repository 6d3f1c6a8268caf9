"""Drives the gateway with the official openai SDK, exactly as a user's code would.

Usage: sdk_check.py BASE_URL ROUTED_MODEL EMBEDDINGS_MODEL
Exits non-zero (with a traceback) on the first check that fails.
"""
import sys

import openai

base_url, routed, embed_model = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key="sk-unused", max_retries=0)

# Chat, non-streaming: a typed ChatCompletion with usage.
r = client.chat.completions.create(model=routed, messages=[{"role": "user", "content": "Say hello."}])
assert r.choices[0].message.content, r
assert r.usage is not None and r.usage.total_tokens > 0, r.usage

# Chat, streaming: chunks parse, content concatenates, the stream terminates.
text = ""
chunks = 0
with client.chat.completions.create(
    model=routed, messages=[{"role": "user", "content": "Say hello."}], stream=True
) as stream:
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
assert chunks >= 2 and text, (chunks, text)

# Streaming with usage requested: the final chunk carries usage.
last = None
for chunk in client.chat.completions.create(
    model=routed, messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
):
    last = chunk
assert last is not None and last.usage is not None and last.usage.total_tokens > 0, last

# Raw response headers explain the routing decision.
raw = client.chat.completions.with_raw_response.create(model=routed, messages=[{"role": "user", "content": "hi"}])
assert raw.headers.get("x-triage-expert"), dict(raw.headers)
assert raw.headers.get("x-triage-request-id"), dict(raw.headers)

# Legacy text completions (code-completion plug-ins, evaluation harnesses): typed
# Completion objects, streamed or not.
c = client.completions.create(model=routed, prompt="def add(a, b):", max_tokens=8)
assert c.object == "text_completion" and c.choices[0].text, c
assert c.usage is not None and c.usage.total_tokens > 0, c.usage
text = ""
for chunk in client.completions.create(model=routed, prompt="Once upon a time", stream=True):
    if chunk.choices:
        text += chunk.choices[0].text
assert text, text
try:
    client.completions.create(model=routed, prompt=[])
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as err:
    assert err.status_code == 400 and err.param == "prompt", err.body

# Embeddings and models.
e = client.embeddings.create(model=embed_model, input=["a", "b"])
assert len(e.data) == 2 and len(e.data[0].embedding) > 0
ids = [m.id for m in client.models.list()]
assert routed in ids and embed_model in ids, ids
m = client.models.retrieve(routed)
assert m.id == routed and m.object == "model", m

# Errors raise the SDK's own exception classes.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as err:
    assert err.status_code == 404 and err.code == "model_not_found", err.body
try:
    client.models.retrieve("no-such-model")
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as err:
    assert err.status_code == 404 and err.code == "model_not_found", err.body
try:
    client.chat.completions.create(model=routed, messages=[])
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as err:
    assert err.status_code == 400 and err.param == "messages", err.body

print("sdk checks passed")
