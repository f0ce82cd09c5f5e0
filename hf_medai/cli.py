"""`hf-medai data|evaluate|audit|card|push|demo ...`. Heavy libraries are imported only by the command that needs them."""

from __future__ import annotations

import argparse
import sys

from hf_medai.errors import ConfigError, HfMedaiError, error_message


def _data(args):
    if args.kind == "lesions":
        from hf_medai.data.synthetic.lesions import write_ham10000

        out = write_ham10000(
            args.out, n=args.n, seed=args.seed, shortcut=args.shortcut, shortcut_rate=args.shortcut_rate
        )
        planted = (
            f", with a planted '{args.shortcut}' shortcut on melanomas (training data only)" if args.shortcut else ""
        )
        print(f"wrote a synthetic HAM10000-format sample of {args.n} images to {out}{planted}")
    elif args.kind == "lesion_pool":
        from hf_medai.data.synthetic.lesion_pool import write_unlabelled_pool

        out = write_unlabelled_pool(args.out, n=args.n, seed=args.seed)
        print(f"wrote an unlabelled pool of {args.n} synthetic lesion images (a plain image folder) to {out}")
    elif args.kind == "ehr":
        from hf_medai.data.synthetic.ehr import write_mimic

        out = write_mimic(args.out, format=args.format, n_patients=args.n, seed=args.seed, gzip=args.gzip)
        print(
            f"wrote synthetic {args.format} tables and notes, lab and chart events{' (csv.gz)' if args.gzip else ''} to {out}"
        )
    else:
        raise ConfigError(f"unknown data kind {args.kind!r}")


def _evaluate(args):
    from hf_medai.external_eval import evaluate_image_classifier

    m = evaluate_image_classifier(
        args.run_dir,
        args.data,
        args.out,
        data_format=args.data_format,
        skip_bad_rows=args.skip_bad_rows,
        overwrite=args.overwrite,
    )
    auroc = m.get("auroc")
    print(
        f"AUROC {auroc:.3f} on {m['n']} images; report and card in {args.out}"
        if auroc is not None
        else f"report in {args.out}"
    )


def _audit(args):
    from hf_medai.audits import audit_run

    m = audit_run(args.run_dir, args.data, args.data_format, args.out, args.skip_bad_rows, args.overwrite)
    print(f"robustness audit written to {args.out or args.run_dir} (metrics.json and the card):")
    for section in m["robustness"].values():
        for line in section["verdicts"].values():
            print(f"  {line}")


def _card(args):
    from hf_medai.cards import write_card

    print(f"wrote {write_card(args.run_dir)}")


def _push(args):
    from hf_medai.hub import plan_push, push_run_folder

    plan = plan_push(args.run_dir, args.include)
    url = push_run_folder(args.run_dir, args.repo_id, private=not args.public, include=args.include, plan=plan)
    print(f"pushed {len(plan.upload)} files to a {'public' if args.public else 'private'} repo: {url}")
    for path, why in plan.left_behind.items():
        print(f"  left behind: {path} ({why})")


def _demo(args):
    from hf_medai.demos import launch_demo

    try:
        launch_demo(args.run_dir, host=args.host, port=args.port, share=args.share)
    except ValueError as e:  # a folder of another kind: say so, no traceback
        raise ConfigError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-medai", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "data",
        help="write synthetic sample data in the real formats",
        description="lesions: HAM10000-format images and metadata. lesion_pool: unlabelled lesion images (a plain "
        "folder) for recipes/image_pretraining.py, drawn apart from the labelled sample. ehr: MIMIC-III or MIMIC-IV "
        "tables (admissions, patients, diagnoses, discharge notes, and lab/chart events with ICU stays and item "
        "dictionaries, real itemids) for the clinical-outcome recipes and hf_medai.data.ehr_measurements.",
    )
    d.add_argument("kind", choices=["lesions", "lesion_pool", "ehr"])
    d.add_argument("--out", required=True, help="folder to write")
    d.add_argument("--n", type=int, default=2000, help="images (lesions, lesion_pool) or patients (ehr)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--format", default="mimic-iii", choices=["mimic-iii", "mimic-iv"], help="ehr layout")
    d.add_argument(
        "--shortcut",
        choices=["ink", "ruler", "hair", "vignette", "colour_chart", "jpeg", "blur", "brightness"],
        help="lesions: plant this artefact on melanoma images only (a spurious marker, for testing shortcut audits)",
    )
    d.add_argument("--shortcut_rate", type=float, default=0.8, help="lesions: share of melanomas given the shortcut")
    d.add_argument("--gzip", action="store_true", help="ehr: write .csv.gz tables, as PhysioNet ships them")
    d.set_defaults(func=_data)

    e = sub.add_parser("evaluate", help="score a saved run on other data, writing the same report to a new folder")
    e.add_argument("run_dir")
    e.add_argument("--data", required=True, help="dataset folder or CSV")
    e.add_argument("--data_format", default="auto")
    e.add_argument("--out", required=True, help="new folder for the report")
    e.add_argument("--skip_bad_rows", action="store_true")
    e.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    e.set_defaults(func=_evaluate)

    a = sub.add_parser(
        "audit",
        help="robustness and shortcut audit of a saved classifier (artefacts, counterfactual notes, QA stability)",
        description="Scores the run's own test split (or --data, into a new --out folder) unchanged and with each "
        "controlled change, writes metrics.json 'robustness' and the card's 'Robustness and shortcuts' section.",
    )
    a.add_argument("run_dir")
    a.add_argument("--data", help="external data (image classifiers): dataset folder or CSV; needs --out")
    a.add_argument("--data_format", default="auto")
    a.add_argument("--out", help="new folder for an external audit's report")
    a.add_argument("--skip_bad_rows", action="store_true")
    a.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    a.set_defaults(func=_audit)

    c = sub.add_parser("card", help="(re)write README.md, the model card, from a run folder")
    c.add_argument("run_dir")
    c.set_defaults(func=_card)

    u = sub.add_parser("push", help="push a run folder to the Hub (private by default)")
    u.add_argument("run_dir")
    u.add_argument("--repo_id", required=True)
    u.add_argument("--public", action="store_true", help="make the repo public (default: private)")
    u.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="publish data files matching PATTERN knowingly (repeatable); they still pass the PHI scanner",
    )
    u.set_defaults(func=_push)

    g = sub.add_parser("demo", help="open the Gradio demo that fits a run folder (research use only)")
    g.add_argument("run_dir")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    g.add_argument("--port", type=int, default=7860)
    g.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    g.set_defaults(func=_demo)
    return p


def main(argv=None) -> int:
    """Expected errors (bad data, a missing or existing folder, a refused push) print one line and return 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (HfMedaiError, FileNotFoundError, FileExistsError) as e:
        print(error_message(e, f"hf-medai {args.command}"), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
