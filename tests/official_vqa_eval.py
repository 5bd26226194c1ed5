"""The official VQA evaluation's answer processing and scoring loop, transcribed line by line
as the oracle that tests/test_eval_metrics.py checks idealagent.answers and
idealagent.evaluation.scoring against.

Source: GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py (class VQAEval):
- the tables, ``processPunctuation``, ``processDigitArticle`` and ``evaluate_2021`` from commit
  a013f0043c1e2cdc995922dfe257f7149aa9af06 (2021-03-11, "Fixed processing answers bug");
- ``evaluate_legacy`` from commit 458a8b268b1a239dc388e0af4423f3fe7477b04f (2016-10-08, "fixed
  the apostrophe symbol issue in contractions dictionary"), the version LAVIS and lmms-eval copy.
  Its tables and processing functions are those of a013f00 (the two differ in whitespace only).
The 2015 beta (07aecec) had another punctuation list (with ":" and "'", without "{", "}", "-",
"!") and curly apostrophes in the contraction map; neither is transcribed.

Copyright (c) 2014, Aishwarya Agrawal. All rights reserved. Redistributed under that
repository's BSD two-clause licence (license.txt there): redistributions must retain this
notice; the software is provided "as is", without any warranty.

Changes for Python 3 and for a test, none in the logic: ``evaluate``'s loop body is a function of
one question (its ground-truth answer records and the predicted answer) returning the question's
accuracy; the records get a unique ``answer_id`` as in the annotation files, so that
``item != gtAnsDatum`` leaves exactly one out; the regular expressions are raw strings (the same
patterns without Python 3's invalid-escape warning); names are the official ones.
"""

# ruff: noqa: N802, N803, N806 -- the official camelCase names are kept

from __future__ import annotations

import re
from typing import Any


class VQAEval:
    """The parts of the official class that score an answer."""

    def __init__(self) -> None:
        self.contractions = {
            "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
            "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
            "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
            "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
            "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
            "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
            "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
            "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
            "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
            "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
            "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
            "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
            "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
            "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
            "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
            "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
            "somethingd've": "something'd've", "something'dve": "something'd've",
            "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
            "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
            "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
            "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
            "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
            "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
            "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
            "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
            "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
            "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
            "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
            "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
            "youll": "you'll", "youre": "you're", "youve": "you've",
        }
        self.manualMap = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                          "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
        self.articles = ["a", "an", "the"]
        self.periodStrip = re.compile(r"(?!<=\d)(\.)(?!\d)")
        self.commaStrip = re.compile(r"(\d)(\,)(\d)")
        self.punct = [";", r"/", "[", "]", '"', "{", "}",
                      "(", ")", "=", "+", "\\", "_", "-",
                      ">", "<", "@", "`", ",", "?", "!"]

    def processPunctuation(self, inText: str) -> str:
        outText = inText
        for p in self.punct:
            if (p + " " in inText or " " + p in inText) or (re.search(self.commaStrip, inText) != None):  # noqa: E711
                outText = outText.replace(p, "")
            else:
                outText = outText.replace(p, " ")
        outText = self.periodStrip.sub("",
                                       outText,
                                       re.UNICODE)
        return outText

    def processDigitArticle(self, inText: str) -> str:
        outText = []
        tempText = inText.lower().split()
        for word in tempText:
            word = self.manualMap.setdefault(word, word)
            if word not in self.articles:
                outText.append(word)
            else:
                pass
        for wordId, word in enumerate(outText):
            if word in self.contractions:
                outText[wordId] = self.contractions[word]
        outText = " ".join(outText)
        return outText

    def evaluate_2021(self, answers: list[dict[str, Any]], prediction: str) -> float:
        """``evaluate``'s loop body for one question, commit a013f00."""
        gts = {"answers": answers}
        res = {"answer": prediction}
        for ansDic in gts["answers"]:
            ansDic["answer"] = ansDic["answer"].replace("\n", " ")
            ansDic["answer"] = ansDic["answer"].replace("\t", " ")
            ansDic["answer"] = ansDic["answer"].strip()
        resAns = res["answer"]
        resAns = resAns.replace("\n", " ")
        resAns = resAns.replace("\t", " ")
        resAns = resAns.strip()
        gtAcc = []
        gtAnswers = [ans["answer"] for ans in gts["answers"]]

        if len(set(gtAnswers)) > 1:
            for ansDic in gts["answers"]:
                ansDic["answer"] = self.processPunctuation(ansDic["answer"])
                ansDic["answer"] = self.processDigitArticle(ansDic["answer"])
            resAns = self.processPunctuation(resAns)
            resAns = self.processDigitArticle(resAns)

        for gtAnsDatum in gts["answers"]:
            otherGTAns = [item for item in gts["answers"] if item != gtAnsDatum]
            matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
            acc = min(1, float(len(matchingAns)) / 3)
            gtAcc.append(acc)
        avgGTAcc = float(sum(gtAcc)) / len(gtAcc)
        return avgGTAcc

    def evaluate_legacy(self, answers: list[dict[str, Any]], prediction: str) -> float:
        """``evaluate``'s loop body for one question, commit 458a8b2."""
        gts = {"answers": answers}
        res = {"answer": prediction}
        resAns = res["answer"]
        resAns = resAns.replace("\n", " ")
        resAns = resAns.replace("\t", " ")
        resAns = resAns.strip()
        resAns = self.processPunctuation(resAns)
        resAns = self.processDigitArticle(resAns)
        gtAcc = []
        gtAnswers = [ans["answer"] for ans in gts["answers"]]
        if len(set(gtAnswers)) > 1:
            for ansDic in gts["answers"]:
                ansDic["answer"] = self.processPunctuation(ansDic["answer"])
        for gtAnsDatum in gts["answers"]:
            otherGTAns = [item for item in gts["answers"] if item != gtAnsDatum]
            matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
            acc = min(1, float(len(matchingAns)) / 3)
            gtAcc.append(acc)
        return float(sum(gtAcc)) / len(gtAcc)


def answer_records(answers: list[str]) -> list[dict[str, Any]]:
    """Human answers as the annotation files hold them: records with a unique ``answer_id``."""
    return [{"answer_id": i, "answer": a} for i, a in enumerate(answers)]


# One instance for every question, as the official evaluate() uses one for a whole run.
OFFICIAL = VQAEval()


def official_2021(prediction: str, answers: list[str]) -> float:
    """The official accuracy of one question since March 2021."""
    return OFFICIAL.evaluate_2021(answer_records(answers), prediction)


def official_legacy(prediction: str, answers: list[str]) -> float:
    """The official accuracy of one question before March 2021."""
    return OFFICIAL.evaluate_legacy(answer_records(answers), prediction)
