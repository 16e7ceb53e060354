"""Shared flags: one spelling everywhere (classification/cli.py), the old spellings kept as aliases."""
from __future__ import annotations

import pytest

from classification.checkpoint import DEFAULT_SEGMENTER
from classification.eval import eval_vizwiz, validate
from classification.training import train
from segmentation import eval as seg_eval
from segmentation import qualitatives

CLASSIFIER_SCRIPTS = {"validate": validate.build_parser, "eval_vizwiz": eval_vizwiz.build_parser}
SEGMENTER_SCRIPTS = {"seg_eval": (seg_eval.build_parser, []), "train": (train.build_parser, []),
                     "qualitatives": (qualitatives.build_parser, ["--out", "qualitatives"])}


@pytest.mark.parametrize("name", CLASSIFIER_SCRIPTS)
def test_classifier_flags_and_aliases(name):
    parser = CLASSIFIER_SCRIPTS[name]()
    canonical = parser.parse_args(["--clas", "rn18", "--random-init"])
    alias = parser.parse_args(["--classifiers", "rn18", "--random-classifiers"])
    assert (canonical.clas, canonical.random_init) == (alias.clas, alias.random_init) == ("rn18", True)
    assert parser.parse_args([]).random_init is False


def test_training_takes_several_classifiers_under_both_spellings():
    parser = train.build_parser()
    assert parser.parse_args([]).classifiers == ["rn50_2"]
    for flag in ("--clas", "--classifiers"):
        args = parser.parse_args([flag, "rn18", "mnet_1", "--random-classifiers"])
        assert args.classifiers == ["rn18", "mnet_1"] and args.random_init


@pytest.mark.parametrize("name", SEGMENTER_SCRIPTS)
def test_segmenter_flag_and_alias(name):
    build, required = SEGMENTER_SCRIPTS[name]
    parser = build()
    assert parser.parse_args(required).seg_checkpoint == str(DEFAULT_SEGMENTER)
    for flag in ("--seg-checkpoint", "--ckpt"):
        assert parser.parse_args([*required, flag, "deeplab.pth"]).seg_checkpoint == "deeplab.pth"


def test_segmentation_output_flag_and_alias():
    parser = seg_eval.build_parser()
    assert parser.parse_args(["--out", "a.json"]).out == parser.parse_args(["--output", "a.json"]).out == "a.json"


@pytest.mark.parametrize("build", [validate.build_parser, eval_vizwiz.build_parser, seg_eval.build_parser])
def test_colm_is_the_same_flag_everywhere(build):
    action = next(a for a in build()._actions if "--colm" in a.option_strings)
    assert action.option_strings == ["--colm"] and "'none'" in action.help and "a path" in action.help
