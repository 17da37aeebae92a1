"""The papers' prompt templates (verbatim) and their rendering through a model's chat template.

Every prompt, at training and at inference time, goes through :func:`render_chat`, so the two never differ.
"""

from __future__ import annotations

BACKTRANSLATION_TEMPLATE = (
    "Below is a candidate answer to a question or instruction from an user. Write the most likely question to "
    "which the text below would be a great answer.\n\n{response}\n\nAnswer in the style of an AI Assistant."
)

RATING_RUBRIC = (
    "Below is an instruction from an user and a candidate answer. Evaluate whether or not the answer is a good "
    "example of how AI Assistant should respond to the user's instruction. Please assign a score using the "
    "following 5-point scale:\n"
    "1: It means the answer is incomplete, vague, off-topic, controversial, or not exactly what the user asked "
    "for. For example, some content seems missing, numbered list does not start from the beginning, the opening "
    "sentence repeats user's question. Or the response is from another person's perspective with their personal "
    "experience (e.g. taken from blog posts), or looks like an answer from a forum. Or it contains promotional "
    "text, navigation text, or other irrelevant information.\n"
    "2: It means the answer addresses most of the asks from the user. It does not directly address the user's "
    "question. For example, it only provides a high-level methodology instead of the exact solution to user's "
    "question.\n"
    "3: It means the answer is helpful but not written by an AI Assistant. It addresses all the basic asks from "
    "the user. It is complete and self contained with the drawback that the response is not written from an AI "
    "assistant's perspective, but from other people's perspective. The content looks like an excerpt from a blog "
    "post, web page, or web search results. For example, it contains personal experience or opinion, mentions "
    "comments section, or share on social media, etc.\n"
    "4: It means the answer is written from an AI assistant's perspective with a clear focus of addressing the "
    "instruction. It provide a complete, clear, and comprehensive response to user's question or instruction "
    "without missing or irrelevant information. It is well organized, self-contained, and written in a helpful "
    "tone. It has minor room for improvement, e.g. more concise and focused.\n"
    "5: It means it is a perfect answer from an AI Assistant. It has a clear focus on being a helpful AI "
    "Assistant, where the response looks like intentionally written to address the user's question or "
    "instruction without any irrelevant sentences. The answer provides high quality content, demonstrating expert "
    "knowledge in the area, is very well written, logical, easy-to-follow, engaging and insightful.\n\n"
)
RATING_ASK_REASONING = (
    'Please first provide a brief reasoning you used to derive the rating score, and then write "Score: <rating>" in the last line.'
)
RATING_ASK_SCORE_ONLY = 'Please write only "Score: <rating>" with no reasoning.'
RATING_PAIR = "\n\n{instruction}\n{output}"
# In logprob mode the assistant turn is prefilled with this; the next token's distribution over 1..5 is the rating.
SCORE_PREFILL = "Score: "

REWRITE_TEMPLATE = (
    "Given the draft response to the provided question below, rewrite the draft to improve it, so it is a high "
    "quality response to the given question.\n\nDraft Response: {response}\n\nQuestion: {instruction}\n\n"
    "Given the above question, rewrite the draft response to be an improvement over the draft response. It "
    "should be as similar as possible, copying text where possible, while making the flow more clear, useful, "
    "relevant and providing a direct answer to the question. It should be written to be impeccably tailored to "
    "the user\u2019s question as if written by an AI Assistant, without extraneous information, reflecting expert "
    "knowledge, and demonstrating a high-quality, engaging, and insightful answer. Try not to add new facts that "
    "are not already in the draft response. Return the rewritten response between [RES] and [/RES]."
)


def with_tag(instruction: str, tag: str | None) -> str:
    """Append the papers' tag as the last sentence of the user turn."""
    instruction = instruction.strip()
    return f"{instruction}\n\n{tag}" if tag else instruction


def backtranslation_prompt(response: str) -> str:
    return BACKTRANSLATION_TEMPLATE.format(response=response.strip())


def rating_prompt(instruction: str, output: str, score_only: bool = False) -> str:
    ask = RATING_ASK_SCORE_ONLY if score_only else RATING_ASK_REASONING
    return RATING_RUBRIC + ask + RATING_PAIR.format(instruction=instruction.strip(), output=output.strip())


def rewrite_prompt(instruction: str, response: str) -> str:
    return REWRITE_TEMPLATE.format(instruction=instruction.strip(), response=response.strip())


_SENTINEL = "\ue000bft-assistant-text\ue000"


def render_chat(tokenizer, user: str, assistant: str | None = None, assistant_prefix: str = "") -> tuple[str, str]:
    """Render one user turn with the tokenizer's chat template (set from the role's ``chat_template`` setting).

    Returns ``(prompt, completion)``: ``prompt`` ends where the assistant starts writing (plus any prefill),
    ``completion`` is the assistant text followed by the end-of-turn marker of the template ("" at inference).
    Training tokenises ``prompt + completion`` and masks the prompt; inference generates after ``prompt``.
    A prefill is placed exactly where the template puts the start of the assistant text (e.g. after the space
    that follows ``[/INST]`` in ``llama2_inst``), found by rendering a sentinel in its place.
    """
    messages = [{"role": "user", "content": user}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if assistant_prefix:
        probe = messages + [{"role": "assistant", "content": assistant_prefix + _SENTINEL}]
        rendered = tokenizer.apply_chat_template(probe, tokenize=False)
        cut = rendered.find(_SENTINEL)
        if cut < 0 or not rendered.startswith(prompt):
            raise ValueError("chat template renders the assistant turn in a way that does not extend the prompt")
        prompt = rendered[:cut]
    if assistant is None:
        return prompt, ""
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": assistant_prefix + assistant}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("chat template renders the assistant turn in a way that does not extend the prompt")
    return prompt, full[len(prompt) :]
