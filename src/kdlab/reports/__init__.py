"""Reports: our numbers beside the papers' published ones.

Import a module of the package, never the package for its contents: this file stays empty so
that the ``tables`` stage (which imports :mod:`kdlab.reports.tables` and
:mod:`kdlab.reports.papers`) loads nothing else. docs/architecture.md lists each module's job.
"""
