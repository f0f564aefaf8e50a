"""A journey through the Python client that openapi-python-client generates from the live
OpenAPI document: the generated package `lighttech_client` must be importable (tests/clients/run
puts it on PYTHONPATH) and the server at the base URL fresh.

    python journey.py BASE_URL
"""

import sys
import uuid

import attrs
from lighttech_client import AuthenticatedClient, Client, models
from lighttech_client.api.auth import post_api_auth_v1_login as login
from lighttech_client.api.auth import post_api_auth_v1_register as register
from lighttech_client.api.balance import get_api_balance_v1 as balance
from lighttech_client.api.balance import get_api_balance_v1_operations as history
from lighttech_client.api.balance import post_api_balance_v1_deposit as deposit
from lighttech_client.api.balance import post_api_balance_v1_transfer as transfer
from lighttech_client.api.balance import post_api_balance_v1_withdraw as withdraw
from lighttech_client.models import (
    BalanceView,
    ErrorCode,
    LoginRequest,
    LoginView,
    MoneyRequest,
    OperationKind,
    OperationPage,
    OperationView,
    Problem,
    RegisteredView,
    RegisterRequest,
    TransferRequest,
)

PASSWORD = "Correct-Horse-Battery-9"
# The fields of an RFC 9457 problem, as the generator names them.
PROBLEM_FIELDS = {"type_", "title", "status", "detail", "code"}


def check(condition, message):
    if not condition:
        sys.exit(f"journey.py: {message}")


def expect(response, status, kind):
    """The parsed body of a response that must have this status and model."""
    check(
        response.status_code == status and isinstance(response.parsed, kind),
        f"expected {status} {kind.__name__}, got {response.status_code}: {response.content!r}",
    )
    return response.parsed


def error_models():
    """The generated model classes, and the names of those shaped like a problem."""
    classes = [getattr(models, name) for name in models.__all__]
    generated = [c for c in classes if attrs.has(c)]
    problems = sorted(
        c.__name__ for c in generated if PROBLEM_FIELDS <= {f.name for f in attrs.fields(c)}
    )
    return generated, problems


def main(base):
    generated, problems = error_models()
    shown = problems if len(problems) <= 5 else problems[:5] + ["..."]
    print(f"generated models: {len(generated)}; problem-like: {len(problems)} {shown}")
    check(
        problems == ["Problem"],
        f"expected exactly one problem-like model (Problem), found {len(problems)}",
    )

    anonymous = Client(base_url=base, raise_on_unexpected_status=True)
    users = {}
    for name in ["alice", "bob"]:
        body = RegisterRequest(username=name, email=f"{name}@example.com", password=PASSWORD)
        registered = expect(
            register.sync_detailed(client=anonymous, body=body), 201, RegisteredView
        )
        check(registered.balance == "0.00", f"{name}'s opening balance: {registered.balance}")
        tokens = expect(
            login.sync_detailed(
                client=anonymous, body=LoginRequest(username=name, password=PASSWORD)
            ),
            200,
            LoginView,
        )
        check(tokens.token_type == "Bearer", f"token type {tokens.token_type}")
        users[name] = AuthenticatedClient(
            base_url=base, token=tokens.access, raise_on_unexpected_status=True
        )
    alice, bob = users["alice"], users["bob"]

    # A deposit, and its replay under the same Idempotency-Key: the same operation, no new money.
    key = str(uuid.uuid4())
    salary = MoneyRequest(amount="100.00", description="salary")
    first = deposit.sync_detailed(client=alice, body=salary, idempotency_key=key)
    made = expect(first, 201, OperationView)
    check(made.type_ == OperationKind.DEPOSIT, f"deposit kind {made.type_}")
    check((made.amount, made.balance_after) == ("100.00", "100.00"), f"deposit {made}")
    again = deposit.sync_detailed(client=alice, body=salary, idempotency_key=key)
    replayed = expect(again, 201, OperationView)
    check(replayed.id == made.id, f"the replay is the same operation: {replayed.id} {made.id}")
    check(again.headers.get("Idempotent-Replayed") == "true", f"replay headers {again.headers}")

    # More than the balance: refused, and the body parses as the one error model.
    refused = withdraw.sync_detailed(client=alice, body=MoneyRequest(amount="250.00"))
    problem = expect(refused, 422, Problem)
    check(problem.code == ErrorCode.INSUFFICIENT_FUNDS, f"withdrawal refused with {problem.code}")
    check(problem.status == 422 and problem.type_ == "about:blank", f"problem {problem}")

    sent = expect(
        transfer.sync_detailed(
            client=alice,
            body=TransferRequest(to="bob", amount="30.00", description="rent"),
            idempotency_key=str(uuid.uuid4()),
        ),
        201,
        OperationView,
    )
    check(sent.type_ == OperationKind.TRANSFER_OUT, f"transfer kind {sent.type_}")
    check(sent.counterparty.username == "bob", f"counterparty {sent.counterparty}")
    check(sent.balance_after == "70.00", f"balance after the transfer {sent.balance_after}")

    page = expect(history.sync_detailed(client=alice), 200, OperationPage)
    kinds = [op.type_ for op in page.results]
    check(
        kinds == [OperationKind.TRANSFER_OUT, OperationKind.DEPOSIT],
        f"alice's history, newest first: {kinds}",
    )
    check(page.next_cursor is None, f"one page: {page.next_cursor}")
    received = expect(history.sync_detailed(client=bob), 200, OperationPage).results
    check(
        [(op.type_, op.amount, op.transfer_id) for op in received]
        == [(OperationKind.TRANSFER_IN, "30.00", sent.transfer_id)],
        f"bob's history: {received}",
    )

    for client, want in [(alice, "70.00"), (bob, "30.00")]:
        got = expect(balance.sync_detailed(client=client), 200, BalanceView).balance
        check(got == want, f"balance {got}, expected {want}")
    print("journey through the generated Python client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
