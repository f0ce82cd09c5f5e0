"""QA adapter demo: a streamed chat with the tuned model, a stop button, and a fixed disclaimer.

Loads `merged/` when the run wrote one (plain transformers), else the base model + the LoRA adapter (peft).
Replies stream token by token through transformers' `TextIteratorStreamer`; Stop ends generation itself
(a stopping criterion), not only the display.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from hf_medai.demos.common import MAX_MESSAGE_CHARS, MAX_NEW_TOKENS, header

DISCLAIMER = (
    "This assistant is a research model tuned on exam-style questions. Its answers can be wrong or "
    "out of date and are not medical advice; do not use them to diagnose or treat anyone. In an "
    "emergency, contact your local emergency number."
)


class QADemo:
    def __init__(self, run_dir: str | Path, max_new_tokens: int = MAX_NEW_TOKENS):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from hf_medai.models.causal_lm import default_dtype, ensure_pad_token

        self.run_dir = Path(run_dir)
        merged = self.run_dir / "merged"
        if (merged / "config.json").is_file():
            self.model = AutoModelForCausalLM.from_pretrained(merged, dtype=default_dtype(), use_safetensors=True)
            self.source = "merged weights"
        else:
            from peft import AutoPeftModelForCausalLM

            try:
                self.model = AutoPeftModelForCausalLM.from_pretrained(
                    run_dir, dtype=default_dtype(), use_safetensors=True
                )
            except OSError as e:
                base = json.loads((self.run_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
                raise FileNotFoundError(
                    f"cannot load the adapter's base model {base!r} ({e}); rerun the recipe "
                    "with --merge true, or make the base model available"
                ) from None
            self.source = "base model + LoRA adapter"
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(run_dir)
        ensure_pad_token(self.model, self.tokenizer)
        self.max_new_tokens = max_new_tokens
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.torch = torch
        self._stop = threading.Event()

    def prompt_ids(self, message: str, history: list[dict]) -> list[int]:
        from hf_medai.data.medqa import SYSTEM_PROMPT, chat_token_ids

        turns = [
            {"role": m["role"], "content": text_of(m["content"])}
            for m in history
            if m.get("role") in ("user", "assistant")
        ]
        while True:  # drop the oldest turns until the prompt leaves room for the reply
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, *turns, {"role": "user", "content": message}]
            if getattr(self.tokenizer, "chat_template", None):
                ids = chat_token_ids(self.tokenizer, messages, add_generation_prompt=True)
            else:
                ids = self.tokenizer("\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:")[
                    "input_ids"
                ]
            if len(ids) + self.max_new_tokens <= self.max_positions or not turns:
                return ids[-(self.max_positions - self.max_new_tokens) :]
            turns = turns[2:]

    def stream_reply(self, message: str, history: list[dict] | None = None):
        """Yield the reply so far, token by token (greedy decoding, so a demo is reproducible)."""
        import gradio as gr
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        message = (message or "").strip()
        if not message:
            raise gr.Error("Type a question first.")
        if len(message) > MAX_MESSAGE_CHARS:
            raise gr.Error(f"The message has {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,}.")
        ids = self.torch.tensor([self.prompt_ids(message, history or [])])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
        stop = self._stop = threading.Event()

        class StopRequested(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop.is_set()

        kwargs = dict(
            input_ids=ids,
            attention_mask=self.torch.ones_like(ids),
            streamer=streamer,
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            stopping_criteria=StoppingCriteriaList([StopRequested()]),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        thread = threading.Thread(target=self.model.generate, kwargs=kwargs, daemon=True)
        thread.start()
        reply = ""
        try:
            for piece in streamer:
                reply += piece
                yield reply
        finally:
            stop.set()  # a closed or cancelled stream also ends generation
            thread.join(timeout=30)

    def chat(self, message: str, history: list[dict] | None):
        """Gradio handler: (chatbot messages, cleared textbox), streamed."""
        history = list(history or [])
        for reply in self.stream_reply(message, history):
            yield [*history, {"role": "user", "content": message}, {"role": "assistant", "content": reply}], ""

    def stop(self):
        self._stop.set()

    def build(self):
        import gradio as gr

        with gr.Blocks(title="hf-medai: medical QA assistant") as app:
            header("Medical QA assistant", f"Model: `{self.run_dir.name}` ({self.source})")
            gr.Markdown(f"**Disclaimer.** {DISCLAIMER}", elem_id="disclaimer")
            chatbot = gr.Chatbot(label="Chat", height=360, render_markdown=False, elem_id="chat")
            message = gr.Textbox(
                label=f"Your question (up to {MAX_MESSAGE_CHARS:,} characters)",
                lines=2,
                max_length=MAX_MESSAGE_CHARS,
                elem_id="message",
            )
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="send")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
                clear = gr.Button("Clear")
            event = send.click(self.chat, inputs=[message, chatbot], outputs=[chatbot, message])
            submit = message.submit(self.chat, inputs=[message, chatbot], outputs=[chatbot, message])
            # runs beside the streaming reply (the queue runs one reply at a time)
            stop.click(self.stop, cancels=[event, submit], concurrency_limit=None, queue=False)
            clear.click(lambda: ([], ""), outputs=[chatbot, message], queue=False)
        return app


def text_of(content) -> str:
    """A chat message's text (Gradio may hand back content as a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(text_of(c) for c in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)
