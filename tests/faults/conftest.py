from tests.runner.stack import stack_home  # noqa: F401  (fixture)
