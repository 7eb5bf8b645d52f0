"""Offline analysis: what KD, DKD and GDKD students learn from a teacher on scikit-learn's digits.

Trains quickstart.py's teacher MLP and its KD, DKD and GDKD students, then

1. analyses the teacher and the three students on the test digits with
   ``keras_gdkd.analysis.report.analyze_models`` (the teacher's top-k mass, teacher-student
   agreement, the gradient on the non-top classes, class-mean gaps), written to
   ``OUTPUT/analysis/`` (``analysis.json``, ``arrays.npz``, ``figures/*.png``);
2. sweeps the temperature (T in 1, 2, 4, 8) for KD, DKD and GDKD over three seeds with
   ``keras_gdkd.analysis.sweeps.run_sweep`` and a digits runner, written to ``OUTPUT/sweep/``
   (``sweep.json``, ``sweep_temperature.png``, one ``results.json`` per run);

then prints the tables and lists the figures. It measures and prints; it asserts nothing about
the accuracies, which on 10 easy classes say little about CIFAR-100 or ImageNet.

    KERAS_BACKEND=jax python examples/analyze_digits.py --output runs/digits
    KERAS_BACKEND=torch python examples/analyze_digits.py --fast

``--fast`` (CI) trains fewer epochs, one seed, and sweeps T in 1 and 4 only. The analysis
students (T=4, seed 0) double as those runs of the sweep. Each call trains its own teacher, so
an earlier sweep in ``OUTPUT/sweep`` is replaced.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

TEMPERATURES = (1, 2, 4, 8)
FAST_TEMPERATURES = (1, 4)
METHODS = ("kd", "dkd", "gdkd")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/analyze_digits", help="folder for the outputs")
    parser.add_argument("--epochs", type=int, help="student epochs (default 30; --fast: 8)")
    parser.add_argument("--teacher-epochs", type=int, help="default 40; --fast: 15")
    parser.add_argument("--seeds", type=int, help="sweep runs per value (default 3; --fast: 1)")
    parser.add_argument(
        "--fast", action="store_true", help="a short run (CI): fewer epochs, one seed, T in 1 and 4"
    )
    args = parser.parse_args(argv)
    defaults = dict(epochs=8, teacher_epochs=15, seeds=1) if args.fast else {}
    defaults = {"epochs": 30, "teacher_epochs": 40, "seeds": 3, **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)  # before Keras starts, so --help answers at once
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow start-up lines
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import keras
    import quickstart as qs  # the teacher, the student and the digits split

    import keras_gdkd as kg
    from keras_gdkd import presets
    from keras_gdkd.analysis import report, sweeps

    output = Path(args.output)
    temperatures = FAST_TEMPERATURES if args.fast else TEMPERATURES
    threads = qs.limit_cpu_threads()
    x_train, x_test, y_train, y_test = qs.load_digits()
    print(
        f"backend: {keras.backend.backend()}{threads}; digits: {len(x_train)} train / "
        f"{len(x_test)} test; outputs in {output}",
        flush=True,
    )
    start = time.perf_counter()

    teacher = qs.train_teacher(x_train, y_train, args.teacher_epochs)
    teacher_top1 = 100 * qs.accuracy(teacher, x_test, y_test)
    print(
        f"teacher MLP 64-256-256-10, {args.teacher_epochs} epochs: test top-1 "
        f"{teacher_top1:.2f}% ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )

    # quickstart.py's recipes as presets, so that the sweep varies them as it does the CIFAR
    # ones. The KD baseline weighs CE 0.1 and KD 0.9, as in the authors' configs.
    params = {"kd": qs.KD_PARAMS, "dkd": qs.DKD_PARAMS, "gdkd": qs.GDKD_PARAMS}
    recipes = {
        method: presets.Preset(
            name="digits_mlp",
            dataset="digits",
            method=method,
            teacher="mlp_256_256",
            student="mlp_16",
            num_classes=10,
            loss_config=params[method],
            ce_weight=0.1 if method == "kd" else 1.0,
            distill_weight=0.9 if method == "kd" else 1.0,
            warmup_epochs=5,
            learning_rate=0.05,
            lr_decay_epochs=(),
            lr_decay_factor=0.1,
            epochs=args.epochs,
            batch_size=64,
            weight_decay=0.0,
            momentum=0.9,
            reference=presets.Reference(teacher_top1=teacher_top1, source="measured here"),
        )
        for method in METHODS
    }

    class TestTop1(keras.callbacks.Callback):
        """The student's test top-1 (%) after each epoch: one forward pass of 719 digits,
        cheaper here than Keras's validation, which compiles a second function per run."""

        def __init__(self, student):
            super().__init__()
            self.student, self.top1 = student, []

        def on_epoch_end(self, epoch, logs=None):
            _ = self.model  # on JAX, reading `model` writes the trained weights back
            logits = keras.ops.convert_to_numpy(self.student(x_test, training=False))
            self.top1.append(100.0 * float((logits.argmax(axis=1) == y_test).mean()))

    finished = {}  # (method, temperature, seed) -> (test top-1 per epoch, seconds)

    def train_student(preset, seed):
        """One student run of ``preset``: the student and its test top-1 (%) per epoch."""
        keras.utils.set_random_seed(seed)
        student = qs.mlp([16], f"student_{preset.method}")
        distiller = kg.Distiller(
            teacher,
            student,
            loss=preset.loss,
            ce_weight=preset.ce_weight,
            distill_weight=preset.distill_weight,
            warmup_epochs=preset.warmup_epochs,
        )
        distiller.compile(
            optimizer=keras.optimizers.SGD(preset.learning_rate, momentum=preset.momentum)
        )
        probe = TestTop1(student)
        t0 = time.perf_counter()
        distiller.fit(
            x_train,
            y_train,
            batch_size=preset.batch_size,
            epochs=preset.epochs,
            callbacks=[probe],
            verbose=0,
        )
        seconds = time.perf_counter() - t0
        finished[preset.method, preset.loss_config["temperature"], seed] = (probe.top1, seconds)
        return student, probe.top1

    print(f"\nstudents MLP 64-16-10, {args.epochs} epochs, seed 0, for the analysis:")
    students = {}
    for method in METHODS:
        t0 = time.perf_counter()
        students[method], top1 = train_student(recipes[method], seed=0)
        print(
            f"  {method:<5} {recipes[method].loss!r}: test top-1 last {top1[-1]:.2f}%, best "
            f"{max(top1):.2f}% ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )

    t0 = time.perf_counter()
    analysis = report.analyze_models(
        teacher,
        students,
        [(x_test, y_test)],
        loss=recipes["gdkd"].loss,
        temperatures=(1.0, 4.0),
        output=output / "analysis",
        meta={"dataset": "sklearn digits", "split": "test (40%)"},
    )
    print(
        f"\nanalysis of {len(x_test)} test digits ({time.perf_counter() - t0:.1f} s) "
        f"-> {output / 'analysis'}"
    )
    print_teacher_table(analysis)
    print_student_tables(analysis)

    sweep_dir = output / "sweep"
    if sweep_dir.exists():
        shutil.rmtree(sweep_dir)  # its runs distilled an earlier teacher

    def digits_runner(method, preset, seed, out):
        # The analysis students are the T=4, seed-0 runs: the same recipe, not trained twice.
        key = (method, preset.loss_config["temperature"], seed)
        if key not in finished:
            train_student(preset, seed)
        top1, seconds = finished[key]
        return {"best_top1": max(top1), "last_top1": top1[-1], "wall_time_s": seconds}

    print(
        f"\ntemperature sweep: {', '.join(METHODS)} x T in {temperatures} x {args.seeds} "
        f"seed(s), {args.epochs} epochs each -> {sweep_dir}",
        flush=True,
    )
    t0 = time.perf_counter()
    sweep = sweeps.run_sweep(
        recipes,
        "temperature",
        temperatures,
        methods=METHODS,
        seeds=range(args.seeds),
        epochs=args.epochs,
        output=sweep_dir,
        runner=digits_runner,
    )
    figure = sweeps.plot_sweep(sweep, sweep_dir / "sweep_temperature.png")
    print(f"sweep: {len(sweep['runs'])} runs in {time.perf_counter() - t0:.0f} s")
    print(sweeps.format_summary(sweep))

    figures = sorted((output / "analysis" / "figures").glob("*.png")) + [figure]
    print("\nfigures:")
    for path in figures:
        print(f"  {path}")
    print(f"done in {time.perf_counter() - start:.0f} s")


def print_teacher_table(analysis: dict) -> None:
    """The teacher's top-k mass and the mass left outside its top-k, per temperature."""
    teacher = analysis["teacher"]
    k = teacher["k"]
    print(
        f"\nteacher on the test set: top-1 {100 * teacher['teacher_top1']:.2f}%, label in "
        f"its top-{k} {100 * teacher['label_in_topk']:.2f}%, argmax != label "
        f"{100 * teacher['argmax_ne_label']:.2f}%"
    )
    print(
        f"{'T':>4} {'top-1 mass':>11} {'top-2 mass':>11} {'top-3 mass':>11} "
        f"{'log10 b_o (median)':>19} {'H/log C':>8} {'autok k':>8} {'n_within':>9}"
    )
    for stats in teacher["per_temperature"].values():
        mass = stats["topk_mass_mean"]
        print(
            f"{stats['temperature']:>4g} {mass[0]:>11.4f} {mass[1]:>11.4f} {mass[2]:>11.4f} "
            f"{stats['log10_other_mass']['median']:>19.2f} "
            f"{stats['entropy']['normalized']['mean']:>8.3f} "
            f"{stats['autok']['mean']:>8.2f} {stats['n_within']['mean']:>9.2f}"
        )
    print(f"(b_o = the teacher's probability mass outside its top-{k} classes)")


def print_student_tables(analysis: dict) -> None:
    """Agreement with the teacher and the gradient on the classes outside the top-k."""
    students = analysis["students"]
    meta = analysis["meta"]
    print(
        f"\n{'student':<8} {'top-1 %':>8} {'agree %':>8} {'KL T=1':>8} {'KL T=4':>8} "
        f"{'high':>8} {'low_top':>8} {'low_other':>9}"
    )
    for label, result in students.items():
        a = result["agreement"]
        kl = {key: value["kl"] for key, value in a["per_temperature"].items()}
        terms = a["gdkd_terms"]
        kls = [f"{kl[key]:>8.4f}" for key in sorted(kl, key=lambda s: float(s.split("=")[1]))]
        print(
            f"{label:<8} {100 * a['student_top1']:>8.2f} {100 * a['top1_agreement']:>8.2f} "
            f"{' '.join(kls)} {terms['high_loss']:>8.4f} {terms['low_top_loss']:>8.4f} "
            f"{terms['low_other_loss']:>9.4f}"
        )
    loss = meta.get("loss", {})
    print(
        f"(KL(q||p) in nats; GDKD terms at T={loss.get('temperature')} with k={loss.get('k')}, "
        "times T^2, unweighted)"
    )
    print(
        f"\n{'student':<8} {'share_other KD':>15} {'share_other GDKD':>17} {'w2/b_o (median)':>16}"
    )
    for label, result in students.items():
        g = result["gradients"]
        print(
            f"{label:<8} {g['kd']['share_other']['median']:>15.3f} "
            f"{g['gdkd']['share_other']['median']:>17.3f} "
            f"{g['amplification_other']['median']:>16.1f}"
        )
    print(
        "(share_other: median over samples of the squared gradient on the classes outside the\n"
        " teacher's top-k as a share of the whole, for KD's and GDKD's gradient at the same\n"
        " logits; w2/b_o: how much GDKD amplifies KD's gradient there)"
    )


if __name__ == "__main__":
    main()
