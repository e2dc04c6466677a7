"""How a chat prompt becomes the token ids a model samples its answer from; every backend encodes the same way."""


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the chat prompt, ending where the assistant's answer starts."""
    if tokenizer.chat_template:
        # The template writes its own special tokens (BOS, turn markers), so the tokenizer adds none.
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"
    return tokenizer(text)["input_ids"]
