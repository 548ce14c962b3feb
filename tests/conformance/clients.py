"""Drives tokengun's simulator with the official `ollama` and `openai` Python clients.

Usage: clients.py BASE_URL MODEL [openai]   (openai: only the OpenAI client, for llama.cpp-like servers)
Exits non-zero (with the reason) when any client call fails or returns something unexpected.
Each check prints one line, so a failure names the endpoint and mode.
"""
import sys

import ollama
import openai

base, model = sys.argv[1], sys.argv[2]
failures = []


def check(name, fn):
    try:
        detail = fn()
        print(f"ok   {name}: {detail}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failures.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {e}")


o = ollama.Client(host=base)


def ollama_generate_stream():
    parts = list(o.generate(model=model, prompt="What is time?", stream=True, options={"num_predict": 12}))
    assert parts[-1].done, "last chunk not done"
    assert parts[-1].eval_count == 12, parts[-1].eval_count
    text = "".join(p.response or "" for p in parts)
    thinking = "".join(p.thinking or "" for p in parts)
    assert text or thinking
    return f"{len(parts)} chunks, eval_count {parts[-1].eval_count}"


def ollama_generate():
    r = o.generate(model=model, prompt="What is time?", stream=False, options={"num_predict": 5})
    assert r.done and r.eval_count == 5, r
    return f"eval_count {r.eval_count}, done_reason {r.done_reason}"


def ollama_chat_stream():
    parts = list(o.chat(model=model, messages=[{"role": "user", "content": "Hi"}], stream=True, options={"num_predict": 8}))
    assert parts[-1].done and parts[-1].eval_count == 8
    return f"{len(parts)} chunks"


def ollama_chat():
    r = o.chat(model=model, messages=[{"role": "user", "content": "Hi"}], stream=False, options={"num_predict": 4})
    assert r.message.role == "assistant" and r.eval_count == 4, r
    return f"message of {len(r.message.content)} chars"


def ollama_list_ps_show():
    names = [m.model for m in o.list().models]
    assert model in names, names
    assert o.ps().models is not None
    s = o.show(model)
    assert s.modelinfo is not None
    return f"models {names}"


def ollama_missing_model():
    try:
        o.generate(model="no-such-model:1b", prompt="x")
    except ollama.ResponseError as e:
        assert e.status_code == 404 and "not found" in e.error, (e.status_code, e.error)
        return "404 as expected"
    raise AssertionError("no error for a missing model")


c = openai.OpenAI(base_url=f"{base}/v1", api_key="sim", max_retries=0)


def openai_chat_stream():
    stream = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 10, usage
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "length", finishes
    return f"{len(chunks)} chunks, usage {usage.completion_tokens}"


def openai_chat():
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=6)
    assert r.usage.completion_tokens == 6 and r.choices[0].message.role == "assistant", r
    return f"finish {r.choices[0].finish_reason}"


def openai_completions_stream():
    stream = c.completions.create(model=model, prompt="Once", max_tokens=7, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    usage = [ch.usage for ch in chunks if ch.usage and ch.usage.completion_tokens]
    assert usage and usage[-1].completion_tokens == 7, chunks[-1]
    return f"{len(chunks)} chunks"


def openai_completions():
    r = c.completions.create(model=model, prompt="Once", max_tokens=3)
    assert r.usage.completion_tokens == 3, r
    return f"text {r.choices[0].text!r}"


def openai_models():
    ids = [m.id for m in c.models.list()]
    assert model in ids, ids
    return f"{ids}"


if sys.argv[3:] != ["openai"]:
    check("ollama generate stream", ollama_generate_stream)
    check("ollama generate", ollama_generate)
    check("ollama chat stream", ollama_chat_stream)
    check("ollama chat", ollama_chat)
    check("ollama list/ps/show", ollama_list_ps_show)
    check("ollama missing model", ollama_missing_model)
check("openai chat stream", openai_chat_stream)
check("openai chat", openai_chat)
check("openai completions stream", openai_completions_stream)
check("openai completions", openai_completions)
check("openai models", openai_models)

if failures:
    print(f"{len(failures)} failed: {', '.join(failures)}")
    sys.exit(1)
