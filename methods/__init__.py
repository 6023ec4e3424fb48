"""Long-tailed methods, one module each: every Method subclass here with a `name` is registered
(ltbench.registry), so a new file is a new method."""

# The order tables list the built-in methods in; a method not named here comes after them.
ORDER = [
    "ce", "focal", "ldam", "ldam_drw", "ce_drw", "cb_focal", "balanced_softmax",  # losses
    "logit_adjust", "logit_adjust_posthoc", "lade", "tde",  # logit adjustment and its kin
    "crt", "tau_norm", "lws",  # decoupling on a CE backbone
    "ce_mixup", "mislas", "ce_wd", "weight_balancing", "gcl_stage1", "gcl",  # two stages, their own stage 1
    "ride", "ride_ea", "ride_distill", "bbn",  # multi-expert and two-branch
    "sc_hybrid", "psc_hybrid", "bcl", "paco", "kcl_stage1", "kcl", "tsc_stage1", "tsc",  # contrastive
]
