"""`hybrid-engine install`, `uninstall` and `doctor`: the package's reports, printed."""

from __future__ import annotations

from ..terminal import EXIT_FAILED, EXIT_OK, print_findings, print_json
from . import ERROR
from .diagnose import doctor
from .register import install, uninstall


def cmd_install(args) -> int:
    report = install(args.browser, extension_ids=args.extension_id or (), system=args.system,
                             dry_run=args.dry_run, user_data_dirs=args.user_data_dir or ())
    if args.json:
        print_json(report.to_dict())
        return EXIT_OK if report.ok else EXIT_FAILED
    verb = "would write" if report.dry_run else "registered"
    for reg in report.registrations:
        print(f"{verb} {', '.join(reg.browsers)}: {reg.location}")
    for skip in report.skipped:
        print(f"skipped {skip['browser']}: {skip['reason']}")
    for note in report.notes:
        print(f"note: {note}")
    print(f"launcher: {report.launcher} (runs {report.python})")
    print_findings(report.errors)
    if report.registrations and not report.dry_run and report.ok:
        print("check it with: hybrid-engine doctor")
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_uninstall(args) -> int:
    system = True if args.system else (False if args.user else None)
    report = uninstall(args.browser, system=system, dry_run=args.dry_run)
    if args.json:
        print_json(report.to_dict())
        return EXIT_OK if report.ok else EXIT_FAILED
    verb = "would remove" if report.dry_run else "removed"
    for reg in report.removed:
        print(f"{verb} {', '.join(reg.browsers)}: {reg.location}")
    for note in report.notes:
        print(f"note: {note}")
    if report.launcher_removed:
        print("removed the launcher")
    if not report.removed and not report.errors:
        print("nothing to remove")
    print_findings(report.errors)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_doctor(args) -> int:
    from ..httpapi.autostart import findings as http_api_findings

    findings = doctor(extension_ids=args.extension_id or (), check_launch=not args.no_launch)
    findings += http_api_findings()
    errors = [f for f in findings if f.severity == ERROR]
    if args.json:
        print_json({"ok": not errors, "findings": [f.to_dict() for f in findings]})
    elif not findings:
        print("all good: the host is registered, well-formed" + ("" if args.no_launch else " and answers hello"))
    else:
        print_findings(findings)
    return EXIT_FAILED if errors else EXIT_OK
