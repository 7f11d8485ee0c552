"""The study registry. Each capability adds one lazy line here (its module imports nothing heavy
until the study runs)."""

from __future__ import annotations

from fmlab._registry import Registry
from fmlab.studies._base import Study

STUDIES: Registry[type[Study]] = Registry("study")

# name -> "module:Class"; keep sorted by name. Imports happen only when a study is looked up.
_LAZY: dict[str, str] = {
    # "capability.short": "fmlab.capability._study:ClassName",
    "attacks.agents": "fmlab.agents._study:AgentsStudy",
    "autoft.shift": "fmlab.autoft._study:ShiftStudy",
    "context.inversion": "fmlab.context._study:InversionStudy",
    "embeddings.echo": "fmlab.embeddings._study:EchoStudy",
    "jailbreak.purple": "fmlab.jailbreak._study:PurpleStudy",
    "ood.agreement": "fmlab.ood._study:AgreementStudy",
    "quant.precision_sweep": "fmlab.quant._study:PrecisionSweepStudy",
    "sam.feature_balance": "fmlab.sam._study:FeatureBalanceStudy",
    "sam.label_noise": "fmlab.sam._study:LabelNoiseStudy",
    "scaling.chinchilla": "fmlab.scaling._study:ChinchillaStudy",
    "scaling.data_filtering": "fmlab.scaling._study:DataFilteringStudy",
    "scaling.precision": "fmlab.scaling._study:PrecisionStudy",
}

for _name, _target in _LAZY.items():
    STUDIES.register(_name, _target)
