"""The messenger's domain: pure state and rules, no asyncio, no files, no clock.

Every state change is an event (``events``); ``state.State`` is the fold over them;
``rules`` decides which events a command produces, given the state and ``now``;
``views`` renders state as the wire's values and says who hears of each event.
"""
