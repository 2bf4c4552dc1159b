from tests.runner.stack import make_stack, stack_home  # noqa: F401  (fixtures)
