"""Three costs of moto's server that grow with the test run, removed without changing what it
answers (local/moto/test_speedups.py checks both).

1. Each TransactWriteItems deep-copies every table it touches, whole, to roll back on failure:
   a transaction into a table of n items copies n items, so a workload's run time grew with the
   square of its writes (70 % of moto's time in the contention tests). The snapshot here copies
   the table's index of items (references) and deep-copies only the items the transaction names;
   the others cannot change while it runs (one request at a time, local/moto/server.py).
2. Every model object moto creates, copies included, is appended to a class-wide list so that
   `mock_aws` can reset it, and never released: the server never resets, so it only leaked.
3. After each response werkzeug waits up to 10 ms for the client to close or send more, to drain
   a body the application did not read. The SDK's clients send whole bodies, which moto reads,
   and close only once the server has: the wait always ran to its end, idling the server.
"""

import contextvars
import copy
import selectors
import types
from collections import defaultdict

import werkzeug.serving
from moto.core.common_models import BaseModel
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

# While a TransactWriteItems runs: the keys it names, as {table name: [(hash, range or None)]}.
_touched = contextvars.ContextVar("touched", default=None)


def _keys_named(backend, transact_items):
    touched = {}
    for entry in transact_items:
        for op in entry.values():
            name = op.get("TableName")
            table = backend.tables.get(name)
            if table is None:
                continue
            key = op.get("Key") or op.get("Item") or {}
            if table.hash_key_attr not in key:
                continue
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = None
            if table.range_key_attr is not None and table.range_key_attr in key:
                range_value = DynamoType(key[table.range_key_attr])
            touched.setdefault(name, []).append((hash_value, range_value))
    return touched


def _table_deepcopy(self, memo):
    keys = (_touched.get() or {}).get(self.name)
    if keys is None:
        # Anything but a transaction's rollback snapshot (a backup, say): moto's full copy.
        return copy._reconstruct(self, memo, *self.__reduce_ex__(4))
    clone = object.__new__(type(self))
    clone.__dict__.update(self.__dict__)
    items = defaultdict(dict)
    for hash_value, value in self.items.items():
        items[hash_value] = dict(value) if self.has_range_key else value
    for hash_value, range_value in keys:
        if hash_value not in self.items:
            continue
        if self.has_range_key:
            if range_value in self.items[hash_value]:
                items[hash_value][range_value] = copy.deepcopy(self.items[hash_value][range_value])
        else:
            items[hash_value] = copy.deepcopy(self.items[hash_value])
    clone.items = items
    return clone


_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_write_items_with_snapshots(self, transact_items):
    token = _touched.set(_keys_named(self, transact_items))
    try:
        return _transact_write_items(self, transact_items)
    finally:
        _touched.reset(token)


def _untracked_new(cls, *args, **kwargs):
    return object.__new__(cls)


class _NoWaitSelector(selectors.DefaultSelector):
    def select(self, timeout=None):
        return super().select(0)


def install():
    Table.__deepcopy__ = _table_deepcopy
    DynamoDBBackend.transact_write_items = _transact_write_items_with_snapshots
    BaseModel.__new__ = _untracked_new
    werkzeug.serving.selectors = types.SimpleNamespace(
        DefaultSelector=_NoWaitSelector, EVENT_READ=selectors.EVENT_READ
    )
