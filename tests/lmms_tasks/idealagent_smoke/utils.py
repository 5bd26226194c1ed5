"""The smoke tasks' doc functions; the scorer of the open questions is lmms-eval's VQAv2 one."""

from lmms_eval.tasks.vqav2.utils import vqav2_process_results_val
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return f"{doc['question']}{(lmms_eval_specific_kwargs or {}).get('post_prompt', '')}"


def mc_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    options = "\n".join(f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(doc["choices"]))
    return f"{doc['question']}\n{options}{(lmms_eval_specific_kwargs or {}).get('post_prompt', '')}"


def mc_doc_to_target(doc):
    return chr(ord("A") + doc["answer"])


def vqa_process_results(doc, results):
    return vqav2_process_results_val(doc, results)
