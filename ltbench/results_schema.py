"""The columns of a run's result files: the one definition the store writes and the report
reads. Imports nothing heavy, so the report can use it without torch."""

RESULT_COLUMNS = [
    "run_id", "method", "dataset", "imbalance_factor", "profile", "backbone", "seed", "epochs",
    "batch_size", "preset", "params", "mmf_convention", "top1", "many", "medium", "few",
    "top1_best", "top1_best_epoch", "n_train", "n_classes", "n_many", "n_medium", "n_few",
    "wall_s", "images_per_s", "peak_mem_mb", "device", "torch", "ltbench_version", "git_sha",
    "started_at", "finished_at", "status", "error", "slurm_job_id",
    # two-stage methods: the stage-1 run, whether it was reused, its recorded training time
    # (wall_s is the sum of both stages); post-hoc choices, made on the validation split (JSON)
    "stage1_run_id", "stage1_reused", "stage1_wall_s", "calibration",
    # how the run was computed (ltbench.settings' execution settings, JSON) and on how many
    # CPU threads: recorded, never part of the run id
    "execution", "threads",
    # the data the run trained and was tested on (ltbench.data.datasets.split_fingerprint), so a
    # changed dataset file cannot pass for the same data
    "split_fingerprint",
    # the experiment tag of the sweep that trained the run (`ltbench run --tag`): an annotation,
    # never part of the run id
    "tag",
    # the method's display name when it ran, so the report names it without importing it
    "method_title",
    # what peak_mem_mb measured (ltbench.environment.PeakMemory): cuda_allocated, rss, rss_lifetime
    "peak_mem_measure",
    # the validation split (ltbench.data.datasets): the final model's top-1 and many / medium /
    # few on it, its size, and the test top-1 at the evaluated epoch best on validation with
    # that epoch (top1_bestval: chosen without the test set; top1_best is chosen on it)
    "val_top1", "val_many", "val_medium", "val_few", "n_val", "top1_bestval", "top1_bestval_epoch",
    # FLOPs of one test image's forward pass through the evaluated model (ltbench.flops), a
    # multiply-add counted as two
    "forward_flops",
    # methods that distil (ltbench.teacher): the teacher run, whether it was reused, its
    # recorded training time (not part of wall_s: the teacher is a run of its own)
    "teacher_run_id", "teacher_reused", "teacher_wall_s",
]
# A run's files besides result.csv and per_class.csv
HISTORY_FILE = "history.csv"  # one row per finished epoch (ltbench.train.Trainer.history)
PREDICTIONS_FILE = "predictions.npz"  # per test image, with the save_predictions setting
# history.csv's columns: these first, then what the method records (its loss parts), then
# the timing and evaluation columns (empty on epochs without an evaluation)
HISTORY_LEADING = ["epoch", "lr", "loss"]
HISTORY_TRAILING = ["images_per_s", "wall_s", "top1", "many", "medium", "few", "val_top1", "val_many", "val_medium",
                    "val_few"]
PER_CLASS_COLUMNS = ["class", "name", "n_train", "correct", "total"]
# the numbers a per_class.csv must hold; `name` (the class's name, empty where the dataset
# names none) is missing from files of an older ltbench
PER_CLASS_COUNTS = ["class", "n_train", "correct", "total"]
NUMERIC_COLUMNS = [
    "imbalance_factor", "seed", "epochs", "batch_size", "top1", "many", "medium", "few",
    "top1_best", "top1_best_epoch", "n_train", "n_classes", "n_many", "n_medium", "n_few",
    "wall_s", "images_per_s", "peak_mem_mb", "threads",
    "val_top1", "val_many", "val_medium", "val_few", "n_val", "top1_bestval", "top1_bestval_epoch", "forward_flops",
]
# What a row must hold to be read at all; the other columns may be missing from rows written
# by an older ltbench, and read as empty.
REQUIRED_COLUMNS = [
    "run_id", "method", "dataset", "imbalance_factor", "profile", "backbone", "seed", "epochs",
    "batch_size", "preset", "params", "top1", "status",
]
