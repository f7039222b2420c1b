# Keeps pytest out of the conformance runner: these modules drive CPython's
# own test.test_asyncio under a chosen loop and are not pytest tests.
collect_ignore_glob = ["*"]
