-- LightTech schema, version 7: emails are unique by their folded key, not by `lower`-casing.
--
-- Version 1 made `email` (the address lower-cased in Rust with `to_lowercase`) unique, which
-- let one address in through several spellings: a final ς and σ, ſ and s, ß and ss, fullwidth
-- and plain letters. `email_key` holds the address's compatibility caseless form (Unicode
-- §3.13 D146: full case folding with NFKC, computed in Rust by `Email::key`), and its unique
-- constraint replaces the one on `email`: equal addresses have equal keys, so the old
-- constraint refused nothing the new one admits. `email` keeps the lower-cased address that
-- is shown.
--
-- The key of every existing user must be exactly what registrations compute, so it is not
-- computed here (`lower` follows the collation and is no case folding; `normalize`, and
-- `casefold` from version 18, follow the server's Unicode version): the migrate step fills it
-- from Rust, in this migration's transaction, right after this file. A unique constraint lets
-- any number of NULLs through: a user registered while uniqueness was by `email`, whose key an
-- older account already holds, keeps no key (the migrate step logs it); the account goes on
-- working and its address stays taken through the older one.
ALTER TABLE users
    ADD COLUMN email_key text CONSTRAINT users_email_key_unique UNIQUE,
    DROP CONSTRAINT users_email_unique;
