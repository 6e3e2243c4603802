//! A small, independent BLAKE3 (the spec's reference algorithm, one-shot only), so the tests
//! can check blob names without trusting vrift's own hashing code (and without adding a
//! dev-dependency).

const CHUNK_LEN: usize = 1024;
const BLOCK_LEN: usize = 64;
const CHUNK_START: u32 = 1 << 0;
const CHUNK_END: u32 = 1 << 1;
const PARENT: u32 = 1 << 2;
const ROOT: u32 = 1 << 3;
const IV: [u32; 8] = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
];
const MSG_PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];

fn g(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize, mx: u32, my: u32) {
    s[a] = s[a].wrapping_add(s[b]).wrapping_add(mx);
    s[d] = (s[d] ^ s[a]).rotate_right(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_right(12);
    s[a] = s[a].wrapping_add(s[b]).wrapping_add(my);
    s[d] = (s[d] ^ s[a]).rotate_right(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_right(7);
}

fn round(s: &mut [u32; 16], m: &[u32; 16]) {
    g(s, 0, 4, 8, 12, m[0], m[1]);
    g(s, 1, 5, 9, 13, m[2], m[3]);
    g(s, 2, 6, 10, 14, m[4], m[5]);
    g(s, 3, 7, 11, 15, m[6], m[7]);
    g(s, 0, 5, 10, 15, m[8], m[9]);
    g(s, 1, 6, 11, 12, m[10], m[11]);
    g(s, 2, 7, 8, 13, m[12], m[13]);
    g(s, 3, 4, 9, 14, m[14], m[15]);
}

fn compress(cv: &[u32; 8], block: &[u32; 16], counter: u64, len: u32, flags: u32) -> [u32; 16] {
    let mut s = [
        cv[0],
        cv[1],
        cv[2],
        cv[3],
        cv[4],
        cv[5],
        cv[6],
        cv[7],
        IV[0],
        IV[1],
        IV[2],
        IV[3],
        counter as u32,
        (counter >> 32) as u32,
        len,
        flags,
    ];
    let mut m = *block;
    for r in 0..7 {
        round(&mut s, &m);
        if r < 6 {
            let mut p = [0u32; 16];
            for (i, w) in p.iter_mut().enumerate() {
                *w = m[MSG_PERMUTATION[i]];
            }
            m = p;
        }
    }
    for i in 0..8 {
        s[i] ^= s[i + 8];
        s[i + 8] ^= cv[i];
    }
    s
}

fn words(bytes: &[u8]) -> [u32; 16] {
    let mut padded = [0u8; BLOCK_LEN];
    padded[..bytes.len()].copy_from_slice(bytes);
    let mut w = [0u32; 16];
    for (i, out) in w.iter_mut().enumerate() {
        *out = u32::from_le_bytes(padded[4 * i..4 * i + 4].try_into().unwrap());
    }
    w
}

/// The inputs of a node's final compression, before we know whether it is the root.
struct Output {
    cv: [u32; 8],
    block: [u32; 16],
    counter: u64,
    len: u32,
    flags: u32,
}

impl Output {
    fn chaining_value(&self) -> [u32; 8] {
        let s = compress(&self.cv, &self.block, self.counter, self.len, self.flags);
        s[..8].try_into().unwrap()
    }

    fn root_hash(&self) -> [u8; 32] {
        let s = compress(&self.cv, &self.block, 0, self.len, self.flags | ROOT);
        let mut out = [0u8; 32];
        for i in 0..8 {
            out[4 * i..4 * i + 4].copy_from_slice(&s[i].to_le_bytes());
        }
        out
    }
}

fn chunk_output(chunk: &[u8], counter: u64) -> Output {
    let mut cv = IV;
    let n_blocks = chunk.len().div_ceil(BLOCK_LEN).max(1);
    for b in 0..n_blocks {
        let start = b * BLOCK_LEN;
        let block = &chunk[start..(start + BLOCK_LEN).min(chunk.len())];
        let mut flags = if b == 0 { CHUNK_START } else { 0 };
        if b + 1 == n_blocks {
            flags |= CHUNK_END;
            return Output {
                cv,
                block: words(block),
                counter,
                len: block.len() as u32,
                flags,
            };
        }
        let s = compress(&cv, &words(block), counter, BLOCK_LEN as u32, flags);
        cv = s[..8].try_into().unwrap();
    }
    unreachable!()
}

fn subtree(input: &[u8], chunk_counter: u64) -> Output {
    if input.len() <= CHUNK_LEN {
        return chunk_output(input, chunk_counter);
    }
    // Left subtree: the largest power-of-two number of chunks that leaves at least one byte.
    let full_chunks = (input.len() - 1) / CHUNK_LEN;
    let left_chunks = 1usize << (usize::BITS - 1 - full_chunks.leading_zeros());
    let left_len = left_chunks * CHUNK_LEN;
    let l = subtree(&input[..left_len], chunk_counter).chaining_value();
    let r = subtree(&input[left_len..], chunk_counter + left_chunks as u64).chaining_value();
    let mut block = [0u32; 16];
    block[..8].copy_from_slice(&l);
    block[8..].copy_from_slice(&r);
    Output {
        cv: IV,
        block,
        counter: 0,
        len: BLOCK_LEN as u32,
        flags: PARENT,
    }
}

/// BLAKE3 of `input` (32 bytes).
pub fn hash(input: &[u8]) -> [u8; 32] {
    subtree(input, 0).root_hash()
}

/// Lower-case hex of BLAKE3 of `input`.
pub fn hex(input: &[u8]) -> String {
    hash(input).iter().map(|b| format!("{b:02x}")).collect()
}
