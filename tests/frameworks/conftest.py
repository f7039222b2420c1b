# tests/frameworks/conftest.py — keeps the main pytest run out of the framework-suite runner:
# run.py drives other projects' test suites in their own venvs; nothing here is a zloop pytest test.
collect_ignore_glob = ["*"]
