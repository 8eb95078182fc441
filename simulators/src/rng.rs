//! The simulators' random numbers: one small generator, seeded from the
//! scenario, so the same seed gives the same line bit for bit on every machine.

/// xorshift64*: tiny, fast, deterministic.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Approximately standard normal (sum of 4 uniforms, rescaled).
    pub fn gauss(&mut self) -> f64 {
        let s = self.f64() + self.f64() + self.f64() + self.f64();
        (s - 2.0) * 1.732_050_8
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
