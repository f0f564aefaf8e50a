// What a TypeScript client writes against the types openapi-typescript generates from the
// OpenAPI document (./schema.d.ts): tests/clients/run typechecks it with tsc --strict.
import type { components, paths } from "./schema";

type Problem = components["schemas"]["Problem"];
type Withdraw = paths["/api/balance/v1/withdraw/"]["post"];
type Refused = Withdraw["responses"][422]["content"]["application/problem+json"];
type Moved = Withdraw["responses"][201]["content"]["application/json"];

// Every error response is the one Problem type, so one handler serves them all.
function explain(problem: Problem): string {
    switch (problem.code) {
        case "insufficient_funds":
            return `not enough money: ${problem.detail}`;
        case "validation_error":
            return Object.entries(problem.errors ?? {})
                .map(([field, messages]) => `${field}: ${messages.join(" ")}`)
                .join("; ");
        default:
            return `${problem.status} ${problem.title}`;
    }
}

const refused: Refused = {
    type: "about:blank",
    title: "Insufficient funds",
    status: 422,
    detail: "Balance 10.00 is less than 25.00",
    code: "insufficient_funds",
};
const asProblem: Problem = refused;
const moved: Moved = {
    id: "0192f5c2-0a11-7f00-b2c3-4d5e6f708192",
    type: "deposit",
    amount: "25.00",
    balance_after: "25.00",
    created_at: "2026-11-28T07:00:00.123Z",
};
const request: Withdraw["requestBody"]["content"]["application/json"] = { amount: "25.00" };
const headers: NonNullable<Withdraw["parameters"]["header"]> = { "Idempotency-Key": "k-1" };

// The types are real, not `any`: a code the API does not have is refused.
const wrong: Problem = {
    ...refused,
    // @ts-expect-error: not an error code of the API
    code: "no_such_code",
};

export const results = [explain(asProblem), moved.balance_after, request.amount, headers, wrong];
