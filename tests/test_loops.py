import asyncio


async def test_async_tests_run_on_both_loops(request) -> None:  # type: ignore[no-untyped-def]
    name = type(asyncio.get_running_loop()).__module__
    assert ("uvloop" in name) == ("[uvloop]" in request.node.name)
