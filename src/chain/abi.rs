//! The exchanges' `OrderFilled` logs, decoded by hand (feed notes §6): two layouts, two
//! pairs of contracts, and which event of a match is its taker leg.
//!
//! Decoded by hand rather than with an ABI crate: two fixed layouts of 32-byte words (no
//! dynamic types), where a generic decoder would bring a dependency tree for eight words.
//! Every amount is an exact integer of six-decimal units (USDC and outcome shares both have
//! six decimals); token ids are uint256, kept as their decimal text (the feed's asset id).
//!
//! - V2 (CLOB V2, from block 84,902,353): `OrderFilled(bytes32 indexed orderHash, address
//!   indexed maker, address indexed taker, uint8 side, uint256 tokenId, uint256
//!   makerAmountFilled, uint256 takerAmountFilled, uint256 fee, bytes32 builder, bytes32
//!   metadata)`; `side` 0 = BUY, 1 = SELL.
//! - V1 (before): `OrderFilled(bytes32 indexed orderHash, address indexed maker, address
//!   indexed taker, uint256 makerAssetId, uint256 takerAssetId, uint256 makerAmountFilled,
//!   uint256 takerAmountFilled, uint256 fee)`; asset id 0 is USDC, so the side is which of
//!   the two is the token.
//!
//! A match emits one event per maker fill and one for the taker order, whose `taker` is the
//! exchange contract itself: the taker legs alone are each fill once, on its taker side. In a
//! taker leg a BUY pays USDC in `makerAmountFilled` for shares in `takerAmountFilled`; a SELL
//! gives shares in `makerAmountFilled` for USDC in `takerAmountFilled`.

/// topic0 of the V2 `OrderFilled`.
pub const ORDER_FILLED_V2: &str =
    "0xd543adfd945773f1a62f74f0ee55a5e3b9b1a28262980ba90b1a89f2ea84d8ee";
/// topic0 of the V1 `OrderFilled`.
pub const ORDER_FILLED_V1: &str =
    "0xd0a08e8c493f9c94f29311604c9de1b4e8c8d4c06bd0c789af57f2d65bfec0f6";
/// The first block of CLOB V2.
pub const V2_FIRST_BLOCK: u64 = 84_902_353;

/// The exchange contracts: (V2 CTF, V2 NegRisk, V1 CTF, V1 NegRisk), lower case.
pub const EXCHANGES: [&str; 4] = [
    "0xe111180000d2663c0091e4f400237545b87b996b",
    "0xe2222d279d744050d28e00520010520000310f59",
    "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e",
    "0xc5d563a36ae78145c45a50134d48a1215220f80a",
];

/// One decoded `OrderFilled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    /// The contract that emitted it (lower case).
    pub exchange: String,
    /// The transaction's hash (lower case).
    pub transaction_hash: String,
    /// The log's index in its block.
    pub log_index: u64,
    /// The block's number.
    pub block: u64,
    /// The order's maker (a lower case address).
    pub maker: String,
    /// The order's taker: the exchange itself in a taker leg.
    pub taker: String,
    /// The outcome token (uint256 as decimal text).
    pub token_id: String,
    /// The order's side: true for BUY (it pays USDC for shares).
    pub buy: bool,
    /// Shares moved, in units of 10⁻⁶.
    pub shares: u128,
    /// USDC moved, in units of 10⁻⁶.
    pub usdc: u128,
    /// The fee, in units of 10⁻⁶ of what the event says it is charged in.
    pub fee: u128,
}

impl Fill {
    /// Whether this event is a match's taker leg: its `taker` is the exchange itself.
    pub fn is_taker_leg(&self) -> bool {
        self.taker == self.exchange
    }

    /// The fill's price as exact decimal text: USDC ÷ shares, rounded half-up to six
    /// decimals (the rule the tape's prices follow when they come from the chain; `None`
    /// for a fill of no shares).
    pub fn price(&self) -> Option<String> {
        (self.shares != 0).then(|| price_text(self.usdc, self.shares))
    }
}

/// USDC ÷ shares as exact decimal text, rounded half-up to six decimals (`"0"` for no
/// shares, which no fill has).
pub fn price_text(usdc: u128, shares: u128) -> String {
    let (Some(num), Some(den)) = (
        usdc.checked_mul(2_000_000)
            .and_then(|n| n.checked_add(shares)),
        shares.checked_mul(2).filter(|d| *d != 0),
    ) else {
        return "0".to_owned();
    };
    let micro = num / den;
    let text = format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Why a log is not a fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAFill {
    /// Another event, or a contract that is not an exchange: not ours.
    Other,
    /// One of ours that does not decode: counted, never guessed at.
    Malformed(String),
}

/// Decodes one `eth_getLogs` entry (`address`, `topics`, `data`, `transactionHash`,
/// `logIndex`, `blockNumber` as the JSON-RPC answer gives them).
pub fn decode(log: &serde_json::Value) -> Result<Fill, NotAFill> {
    let text = |k: &str| {
        log.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_ascii_lowercase)
    };
    let exchange = text("address").ok_or(NotAFill::Other)?;
    if !EXCHANGES.contains(&exchange.as_str()) {
        return Err(NotAFill::Other);
    }
    let topics: Vec<String> = log
        .get("topics")
        .and_then(|t| t.as_array())
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    let v2 = match topics.first().map(String::as_str) {
        Some(ORDER_FILLED_V2) => true,
        Some(ORDER_FILLED_V1) => false,
        _ => return Err(NotAFill::Other),
    };
    let bad = |why: &str| NotAFill::Malformed(why.to_owned());
    if topics.len() != 4 {
        return Err(bad("OrderFilled has four topics"));
    }
    let data = text("data").ok_or_else(|| bad("no data"))?;
    let words = words(&data).ok_or_else(|| bad("data is not whole 32-byte words of hex"))?;
    let address = |t: &str| -> Result<String, NotAFill> {
        let w = word(t).ok_or_else(|| bad("a topic is not a 32-byte word"))?;
        if w[..12].iter().any(|b| *b != 0) {
            return Err(bad("an address topic with high bytes set"));
        }
        Ok(format!("0x{}", hex(&w[12..])))
    };
    let (maker, taker) = (address(&topics[2])?, address(&topics[3])?);
    let small = |w: &[u8; 32]| -> Result<u128, NotAFill> {
        if w[..16].iter().any(|b| *b != 0) {
            return Err(bad("an amount past 2^128"));
        }
        Ok(u128::from_be_bytes(w[16..].try_into().unwrap_or([0; 16])))
    };
    let (buy, token_id, maker_amount, taker_amount, fee) = if v2 {
        if words.len() != 7 {
            return Err(bad("a V2 OrderFilled has seven data words"));
        }
        let side = small(&words[0])?;
        if side > 1 {
            return Err(bad("side is neither 0 (BUY) nor 1 (SELL)"));
        }
        (
            side == 0,
            decimal(&words[1]),
            small(&words[2])?,
            small(&words[3])?,
            small(&words[4])?,
        )
    } else {
        if words.len() != 5 {
            return Err(bad("a V1 OrderFilled has five data words"));
        }
        let (maker_asset, taker_asset) = (decimal(&words[0]), decimal(&words[1]));
        // USDC is asset 0: a BUY gives USDC (the maker asset) for the token.
        let (buy, token) = match (maker_asset == "0", taker_asset == "0") {
            (true, false) => (true, taker_asset),
            (false, true) => (false, maker_asset),
            _ => return Err(bad("neither or both assets are USDC")),
        };
        (
            buy,
            token,
            small(&words[2])?,
            small(&words[3])?,
            small(&words[4])?,
        )
    };
    let (usdc, shares) = if buy {
        (maker_amount, taker_amount)
    } else {
        (taker_amount, maker_amount)
    };
    let number = |k: &str| -> Result<u64, NotAFill> {
        let t = text(k).ok_or_else(|| bad("no block number or log index"))?;
        u64::from_str_radix(t.trim_start_matches("0x"), 16)
            .map_err(|_| bad("a block number or log index that is no hex quantity"))
    };
    Ok(Fill {
        exchange,
        transaction_hash: text("transactionHash").ok_or_else(|| bad("no transaction hash"))?,
        log_index: number("logIndex")?,
        block: number("blockNumber")?,
        maker,
        taker,
        token_id,
        buy,
        shares,
        usdc,
        fee,
    })
}

fn word(hex_text: &str) -> Option<[u8; 32]> {
    let w = words(hex_text)?;
    (w.len() == 1).then(|| w[0])
}

/// `0x`-prefixed hex as 32-byte words; `None` unless it is whole words of hex.
fn words(hex_text: &str) -> Option<Vec<[u8; 32]>> {
    let digits = hex_text.strip_prefix("0x")?.as_bytes();
    if digits.len() % 64 != 0 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    digits
        .chunks(64)
        .map(|chunk| {
            let mut w = [0u8; 32];
            for (i, pair) in chunk.chunks(2).enumerate() {
                w[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
            }
            Some(w)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 256-bit big-endian word as decimal text (token ids are uint256).
fn decimal(w: &[u8; 32]) -> String {
    // Four 64-bit limbs, most significant first; divided by 10^19 until zero.
    let mut limbs: [u64; 4] = [0; 4];
    for (i, l) in limbs.iter_mut().enumerate() {
        *l = u64::from_be_bytes(w[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    }
    const CHUNK: u64 = 10_000_000_000_000_000_000;
    let mut parts: Vec<u64> = Vec::new();
    while limbs.iter().any(|l| *l != 0) {
        let mut rem: u128 = 0;
        for l in limbs.iter_mut() {
            let cur = (rem << 64) | u128::from(*l);
            *l = (cur / u128::from(CHUNK)) as u64;
            rem = cur % u128::from(CHUNK);
        }
        parts.push(rem as u64);
    }
    match parts.split_last() {
        None => "0".to_owned(),
        Some((most, rest)) => {
            let mut s = most.to_string();
            for p in rest.iter().rev() {
                s.push_str(&format!("{p:019}"));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u128) -> String {
        format!("{:064x}", n)
    }

    fn addr(a: &str) -> String {
        format!("0x{:0>64}", a.trim_start_matches("0x"))
    }

    const TOKEN: &str =
        "51017454859755088219489118124435325064140426075273900429870535028649013027589";

    fn token_word() -> String {
        // TOKEN as 32 bytes (checked by the decimal round trip below).
        let mut v = [0u8; 32];
        let mut digits: Vec<u32> = TOKEN.bytes().map(|b| u32::from(b - b'0')).collect();
        for byte in v.iter_mut().rev() {
            let mut rem = 0u32;
            for d in digits.iter_mut() {
                let cur = rem * 10 + *d;
                *d = cur / 256;
                rem = cur % 256;
            }
            *byte = rem as u8;
        }
        hex(&v)
    }

    fn v2_log(
        taker: &str,
        side: u128,
        maker_amount: u128,
        taker_amount: u128,
    ) -> serde_json::Value {
        serde_json::json!({
            "address": EXCHANGES[0],
            "topics": [ORDER_FILLED_V2, format!("0x{}", w(7)), addr("0xabc"), addr(taker)],
            "data": format!("0x{}{}{}{}{}{}{}", w(side), token_word(), w(maker_amount), w(taker_amount), w(0), w(0), w(0)),
            "transactionHash": "0xFEED",
            "logIndex": "0x1f",
            "blockNumber": "0x50f8a51",
        })
    }

    #[test]
    fn the_legs_of_section_six_decode_exactly() {
        // Real taker legs (feed notes §6): BUY 5000000 / 7575758 at 0.66; SELL 7570000 /
        // 4920500 at 0.65.
        let buy = decode(&v2_log(EXCHANGES[0], 0, 5_000_000, 7_575_758)).expect("a fill");
        assert!(buy.is_taker_leg() && buy.buy);
        assert_eq!((buy.usdc, buy.shares), (5_000_000, 7_575_758));
        assert_eq!(buy.token_id, TOKEN);
        assert_eq!(buy.price().as_deref(), Some("0.66"));
        assert_eq!(
            (buy.block, buy.log_index, buy.transaction_hash.as_str()),
            (84_904_529, 31, "0xfeed")
        );
        let sell = decode(&v2_log(EXCHANGES[0], 1, 7_570_000, 4_920_500)).expect("a fill");
        assert!(!sell.buy);
        assert_eq!((sell.shares, sell.usdc), (7_570_000, 4_920_500));
        assert_eq!(sell.price().as_deref(), Some("0.65"));
        // A maker leg: its taker is a trader, not the exchange.
        let maker = decode(&v2_log("0x1234", 1, 7_575_758, 5_000_000)).expect("a fill");
        assert!(!maker.is_taker_leg());
    }

    #[test]
    fn v1_events_say_the_side_by_which_asset_is_usdc() {
        let log = serde_json::json!({
            "address": EXCHANGES[3].to_uppercase().replace("0X", "0x"),
            "topics": [ORDER_FILLED_V1, format!("0x{}", w(1)), addr("0xabc"), addr(EXCHANGES[3])],
            "data": format!("0x{}{}{}{}{}", w(0), token_word(), w(5_000_000), w(7_575_758), w(0)),
            "transactionHash": "0x01", "logIndex": "0x0", "blockNumber": "0x10",
        });
        let f = decode(&log).expect("a V1 fill");
        assert!(f.buy && f.is_taker_leg());
        assert_eq!(
            (f.token_id.as_str(), f.usdc, f.shares),
            (TOKEN, 5_000_000, 7_575_758)
        );
    }

    #[test]
    fn what_is_not_ours_or_does_not_decode_is_said() {
        let mut other = v2_log(EXCHANGES[0], 0, 1, 1);
        other["address"] = "0x0000000000000000000000000000000000000001".into();
        assert_eq!(decode(&other), Err(NotAFill::Other));
        let mut short = v2_log(EXCHANGES[0], 0, 1, 1);
        short["data"] = "0x00".into();
        assert!(matches!(decode(&short), Err(NotAFill::Malformed(_))));
        let mut side = v2_log(EXCHANGES[0], 2, 1, 1);
        side["logIndex"] = "0x1".into();
        assert!(matches!(decode(&side), Err(NotAFill::Malformed(_))));
        let mut huge = v2_log(EXCHANGES[0], 0, 1, 1);
        huge["data"] = format!(
            "0x{}{}{}{}{}{}{}",
            w(0),
            token_word(),
            "f".repeat(64),
            w(1),
            w(0),
            w(0),
            w(0)
        )
        .into();
        assert!(matches!(decode(&huge), Err(NotAFill::Malformed(_))));
        assert_eq!(decimal(&[0; 32]), "0");
        let mut max = [0xffu8; 32];
        assert_eq!(
            decimal(&max),
            "115792089237316195423570985008687907853269984665640564039457584007913129639935"
        );
        max[0] = 0;
        assert!(decimal(&max).len() < 78);
    }
}
