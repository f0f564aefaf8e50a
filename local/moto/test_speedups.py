"""What speedups.py changes in moto, checked in process (`python -m pytest local/moto`): a
failed transaction still leaves nothing behind, a successful one applies every write, and the
rollback snapshot copies only the items the transaction names."""

import copy

import boto3
import pytest
import speedups
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, Item

speedups.install()

TABLE = "speedups"


@pytest.fixture
def dynamodb():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[
                {"AttributeName": "PK", "KeyType": "HASH"},
                {"AttributeName": "SK", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "PK", "AttributeType": "S"},
                {"AttributeName": "SK", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for pk in ("a", "b"):
            client.put_item(
                TableName=TABLE,
                Item={"PK": {"S": pk}, "SK": {"S": "account"}, "balance": {"N": "10"}},
            )
        yield client


def key(pk):
    return {"PK": {"S": pk}, "SK": {"S": "account"}}


def balance(client, pk):
    item = client.get_item(TableName=TABLE, Key=key(pk), ConsistentRead=True).get("Item")
    return None if item is None else item["balance"]["N"]


def set_balance(pk, value):
    return {
        "Update": {
            "TableName": TABLE,
            "Key": key(pk),
            "UpdateExpression": "SET balance = :v",
            "ExpressionAttributeValues": {":v": {"N": value}},
        }
    }


def test_a_cancelled_transaction_changes_nothing(dynamodb):
    with pytest.raises(ClientError) as refused:
        dynamodb.transact_write_items(
            TransactItems=[
                set_balance("a", "5"),
                {"Put": {"TableName": TABLE, "Item": {**key("c"), "balance": {"N": "1"}}}},
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": key("b"),
                        "ConditionExpression": "balance > :v",
                        "ExpressionAttributeValues": {":v": {"N": "100"}},
                    }
                },
            ]
        )
    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert (balance(dynamodb, "a"), balance(dynamodb, "b"), balance(dynamodb, "c")) == (
        "10",
        "10",
        None,
    )


def test_a_successful_transaction_applies_every_write(dynamodb):
    dynamodb.transact_write_items(
        TransactItems=[
            set_balance("a", "7"),
            set_balance("b", "13"),
            {"Put": {"TableName": TABLE, "Item": {**key("c"), "balance": {"N": "1"}}}},
        ]
    )
    assert (balance(dynamodb, "a"), balance(dynamodb, "b"), balance(dynamodb, "c")) == (
        "7",
        "13",
        "1",
    )


def test_the_snapshot_copies_only_the_named_items(dynamodb):
    table = dynamodb_backends["123456789012"]["us-east-1"].tables[TABLE]
    a, b = DynamoType({"S": "a"}), DynamoType({"S": "b"})
    sk = DynamoType({"S": "account"})
    token = speedups._touched.set({TABLE: [(a, sk)]})
    try:
        snapshot = copy.deepcopy(table)
    finally:
        speedups._touched.reset(token)
    assert snapshot.items[b][sk] is table.items[b][sk]
    assert snapshot.items[a][sk] is not table.items[a][sk]
    assert snapshot.items[a][sk] == table.items[a][sk]
    assert snapshot.items is not table.items
    # Outside a transaction a copy is moto's own, of every item.
    full = copy.deepcopy(table)
    assert full.items[b][sk] is not table.items[b][sk]
    assert full.items[b][sk] == table.items[b][sk]


def test_models_are_not_kept_for_ever(dynamodb):
    before = len(Item.instances_tracked)
    for value in ("1", "2", "3"):
        dynamodb.transact_write_items(TransactItems=[set_balance("a", value)])
    assert len(Item.instances_tracked) == before
