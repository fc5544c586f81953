//! The initial state, and the deterministic devnet genesis.

use std::collections::{BTreeMap, BTreeSet};

use crate::bls::SecretKey;
use crate::error::CircuitError;
use crate::hash::{pubkey_hash, ACCOUNT_DEPTH, POOL_DEPTH, TOKEN_DEPTH};
use crate::state::{AccountRecord, Pool, State, BPS, FEE_TOKEN, OPERATOR_ACCOUNT};
use crate::store::{MemoryStore, StateStore};
use crate::tx::PUBKEY_LEN;

/// One account at genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisAccount {
    /// Account id.
    pub id: u32,
    /// The account's BLS public key.
    pub pubkey: [u8; PUBKEY_LEN],
    /// Balances by token.
    pub balances: Vec<(u16, u64)>,
}

/// The initial state: accounts (the operator's, id 0, among them) and pools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Genesis {
    /// Accounts.
    pub accounts: Vec<GenesisAccount>,
    /// Pools, with ids 0, 1, 2, ...
    pub pools: Vec<Pool>,
}

/// Number of tokens the devnet funds.
pub const DEVNET_TOKENS: u16 = 4;
/// Each devnet account's balance of each token.
pub const DEVNET_BALANCE: u64 = 1_000_000_000_000;
/// Each devnet pool's reserve of each token.
pub const DEVNET_RESERVE: u64 = 10_000_000_000_000;

/// The secret key of devnet account `i`, derived from the seed `devnet-<i>`.
pub fn devnet_key(i: u32) -> SecretKey {
    SecretKey::from_seed(format!("devnet-{i}").as_bytes())
}

/// The public key (EIP-197 bytes) of devnet account `i`.
pub fn devnet_pubkey(i: u32) -> [u8; PUBKEY_LEN] {
    devnet_key(i).public_key().to_bytes()
}

impl Genesis {
    /// The devnet: accounts `0..accounts` (0 is the operator), keys from the seeds `devnet-<i>`,
    /// each holding [`DEVNET_BALANCE`] of
    /// tokens `0..4`, and pools (0,1), (0,2), (0,3), (1,2), (2,3) with [`DEVNET_RESERVE`] of each
    /// side and a 0.3 % fee.
    pub fn devnet(accounts: u32) -> Genesis {
        let accounts = (0..accounts.max(1))
            .map(|id| GenesisAccount {
                id,
                pubkey: devnet_pubkey(id),
                balances: (0..DEVNET_TOKENS).map(|t| (t, DEVNET_BALANCE)).collect(),
            })
            .collect();
        let pools = [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]
            .into_iter()
            .map(|(a, b)| Pool {
                token_a: a,
                token_b: b,
                reserve_a: DEVNET_RESERVE,
                reserve_b: DEVNET_RESERVE,
                fee_bps: 30,
            })
            .collect();
        Genesis { accounts, pools }
    }

    /// Checks the invariants the circuit relies on: ids in range and distinct, the operator
    /// present, pools between two distinct tokens with positive reserves and a fee below 100 %,
    /// and every token's total supply (balances plus reserves) at most `u64::MAX`, so no
    /// balance can ever overflow.
    pub fn validate(&self) -> Result<(), CircuitError> {
        let err = |m: String| Err(CircuitError::Config(m));
        let mut ids = BTreeSet::new();
        let mut supply: BTreeMap<u16, u64> = BTreeMap::new();
        let mut add = |token: u16, x: u64| -> Result<(), CircuitError> {
            if u32::from(token) >= 1 << TOKEN_DEPTH {
                return Err(CircuitError::Config(format!("token {token} out of range")));
            }
            let s = supply.entry(token).or_default();
            *s =
                s.checked_add(x).ok_or_else(|| CircuitError::Config(format!("supply of token {token} exceeds u64")))?;
            Ok(())
        };
        for a in &self.accounts {
            if u64::from(a.id) >= 1 << ACCOUNT_DEPTH || !ids.insert(a.id) {
                return err(format!("account id {} out of range or repeated", a.id));
            }
            let mut tokens = BTreeSet::new();
            for &(t, x) in &a.balances {
                if !tokens.insert(t) {
                    return err(format!("account {} lists token {t} twice", a.id));
                }
                add(t, x)?;
            }
        }
        if !ids.contains(&OPERATOR_ACCOUNT) {
            return err("the operator account 0 is missing".into());
        }
        if self.pools.len() as u64 > 1 << POOL_DEPTH {
            return err("too many pools".into());
        }
        for (i, p) in self.pools.iter().enumerate() {
            if p.token_a == p.token_b || p.reserve_a == 0 || p.reserve_b == 0 || u64::from(p.fee_bps) >= BPS {
                return err(format!("pool {i} is invalid: {p:?}"));
            }
            add(p.token_a, p.reserve_a)?;
            add(p.token_b, p.reserve_b)?;
        }
        Ok(())
    }

    /// Builds the state in memory.
    pub fn build(&self) -> Result<State<MemoryStore>, CircuitError> {
        self.build_into(MemoryStore::default())
    }

    /// Builds the state into an empty store.
    pub fn build_into<S: StateStore>(&self, store: S) -> Result<State<S>, CircuitError> {
        self.validate()?;
        Ok(self.write(store))
    }

    /// Builds the state without [`Genesis::validate`]: only for tests that need states the
    /// invariants forbid (to show the circuit's own overflow checks).
    #[doc(hidden)]
    pub fn build_unvalidated(&self) -> State<MemoryStore> {
        self.write(MemoryStore::default())
    }

    fn write<S: StateStore>(&self, store: S) -> State<S> {
        let mut state = State::from_store(store);
        for a in &self.accounts {
            let mut record = AccountRecord::registered(pubkey_hash(&a.pubkey));
            for &(t, x) in &a.balances {
                if t == FEE_TOKEN {
                    record.fee_balance = x;
                } else {
                    state.write_balance(a.id, t, x);
                }
            }
            state.write_account(a.id, record);
        }
        for (i, p) in self.pools.iter().enumerate() {
            state.write_pool(i as u32, *p);
        }
        state
    }
}
