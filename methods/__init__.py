"""Long-tailed methods, one module each: every Method subclass here with a `name` is registered
(ltbench.registry), so a new file is a new method."""

# The order tables list the built-in methods in; a method not named here comes after them.
ORDER = ["ce", "focal", "ldam", "ldam_drw", "ce_drw", "cb_focal", "balanced_softmax", "logit_adjust",
         "logit_adjust_posthoc", "lade", "crt", "tau_norm", "lws", "sc_hybrid", "psc_hybrid", "ride", "ride_ea", "bbn"]
