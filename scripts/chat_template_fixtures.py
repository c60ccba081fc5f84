"""Chat-template renderings by jinja2 (as transformers renders them: trim_blocks and
lstrip_blocks) for tests/model/test-chat-template.cpp. Imported by gen_tokenizer_fixtures.py.

The SmolLM2 template is the one stored in the default model's GGUF; the Qwen2.5-style and
Llama-3 templates are written here after the published ones (the parts that matter for plain
{role, content} conversations: default system prompt, message framing, bos, trim)."""
import json
import os

import jinja2

SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
           "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
           "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|im_start|>assistant\n' }}{% endif %}")

QWEN25 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] "
          "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content "
          "%}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
          "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "  padded\n\n content with trailing space  \n"}],
    [{"role": "user", "content": "Ünïcödé 日本語 😀\nsecond line"}],
]


def render(template, messages, add_generation_prompt, bos_token):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt,
                                            bos_token=bos_token, tools=None)


def write(out_dir):
    entries = []
    for name, template, bos, expected_name, default_system in [
            ("smollm2", SMOLLM2, "<|im_start|>", "chatml",
             "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
            ("qwen2.5", QWEN25, "", "chatml",
             "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
            ("llama3", LLAMA3, "<|begin_of_text|>", "llama3", "")]:
        cases = []
        for messages in CONVERSATIONS:
            for gen in (False, True):
                cases.append({"messages": messages, "add_generation_prompt": gen,
                              "expected": render(template, messages, gen, bos)})
        entries.append({"name": name, "template": template, "bos_token": bos,
                        "expected_name": expected_name, "default_system": default_system,
                        "cases": cases})
    with open(os.path.join(out_dir, "chat-templates.json"), "w", encoding="utf-8") as f:
        json.dump(entries, f, ensure_ascii=False, indent=1)
