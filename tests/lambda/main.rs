//! Every function binary as a Lambda, in one test binary: through a stand-in Runtime API on
//! the embedded store (`runtime`), and on DynamoDB behind a recording proxy that checks each
//! function's IAM policy against the calls it makes (`iam`); the key rotation function
//! as Secrets Manager invokes it (`rotation`).

mod iam;
mod rotation;
mod runtime;
mod support;
