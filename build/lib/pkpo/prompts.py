"""Prompt token ids: how a task's chat becomes the ids the trainer and the samplers share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from transformers import PreTrainedTokenizerBase


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    messages_list: Sequence[Sequence[Mapping[str, str]]],
    use_chat_template: bool,
) -> list[list[int]]:
    """Token ids of each chat (``[{"role", "content"}, ...]``) as the policy's prompt.

    With ``use_chat_template`` the tokenizer's chat template renders the chat with the
    assistant turn opened (``add_generation_prompt=True``); otherwise (base models without a
    template, e.g. Gemma-3-270M) the prompt is the messages' contents joined by blank lines
    plus a newline, with the tokenizer's usual special tokens (BOS). Trainer and sampler both
    use these ids, so they agree on the tokenization.
    """
    if use_chat_template and tokenizer.chat_template is None:
        raise ValueError(
            f"chat_template=true but the tokenizer of {tokenizer.name_or_path} has no chat "
            "template; set chat_template: false in the model config"
        )
    encoded = []
    for messages in messages_list:
        if not messages:
            raise ValueError("encode_prompts: got an empty message list")
        if use_chat_template:
            text = tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=False
            )
            # the template already wrote any BOS token as text
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = "\n\n".join(message["content"] for message in messages) + "\n"
            ids = tokenizer(text)["input_ids"]
        encoded.append(list(ids))
    return encoded
