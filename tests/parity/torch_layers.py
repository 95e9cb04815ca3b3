"""torch modules for the DSL layers that torch.nn has no single module for,
named as pipec and pipert name their parameters (layers.{i}.tokens.weight,
layers.{i}.attn.qkv.weight, ...). Shared by the parity scripts.

Attention follows pipe's kernel exactly: scale 1/sqrt(head width), causal
and padding masks over keys, and a query whose keys are all masked gets
zeros (softmax alone would give NaN).

Block's dropouts are GPT-2's (nanoGPT's): on the attention probabilities,
on attn.proj's output and on mlp.proj's output, each before what follows
it. nn.Dropout draws torch's own masks; a caller that must reproduce pipe's
(Philox, kernels/cpu/k_random.c) passes noise = the three factor tensors
(0 or 1/(1-p)), which replace the nn.Dropout calls the way nn.Dropout
applies its own: input * noise.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class Embedding(nn.Module):
    """embedding(vocab, dim, positions): tokens, plus learned positions."""

    def __init__(self, vocab, dim, positions=0):
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(positions, dim) if positions > 0 else None

    def forward(self, ids):
        x = self.tokens(ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(ids.shape[1]))
        return x


class Attention(nn.Module):
    def __init__(self, dim, heads, causal, dropout=0.0):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads
        self.causal = causal
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, noise=None):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
        s = q @ k.transpose(-2, -1) / math.sqrt(d // h)
        if self.causal:
            s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        if mask is not None:
            s = s.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        a = s.softmax(-1).nan_to_num(0.0)
        a = self.drop(a) if noise is None else a * noise
        y = (a @ v).transpose(1, 2).reshape(b, t, d)
        return self.proj(y)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    """transformer_block: the pre-LayerNorm GPT-2 block. mask: the name of
    the input it reads as its padding mask (or True), or None; forward
    ignores a mask the block does not use, as pipe does."""

    def __init__(self, dim, heads, mlp=None, causal=False, mask=None, dropout=0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, heads, causal, dropout)
        self.ln2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, 4 * dim if mlp is None else mlp)
        self.drop = nn.Dropout(dropout)
        self.uses_mask = mask

    def forward(self, x, mask=None, noise=None):
        """noise: None (nn.Dropout), or the factors of the three sites:
        (B, H, T, T) for the probabilities, (B, T, D) for attn.proj's
        output, (B, T, D) for mlp.proj's."""
        n1, n2, n3 = noise if noise is not None else (None, None, None)
        a = self.attn(self.ln1(x), mask if self.uses_mask else None, n1)
        x = x + (self.drop(a) if n2 is None else a * n2)
        m = self.mlp(self.ln2(x))
        return x + (self.drop(m) if n3 is None else m * n3)


# ---- llama_block and rmsnorm: Hugging Face's LLaMA (transformers'
# modeling_llama.py), written out here without importing transformers:
# LlamaRMSNorm, LlamaRotaryEmbedding with rotate_half, repeat_kv for
# grouped-query attention, eager attention, LlamaMLP (SiLU gate), and the
# pre-norm LlamaDecoderLayer; the parameter names are HF's. One difference,
# pipe's: masked keys are -inf, not HF's finfo.min, and a query whose keys
# are all masked gets zeros (HF's additive mask would spread it evenly over
# the masked keys); with a causal mask and no padding at position 0 the
# two agree.


class RMSNorm(nn.Module):
    """LlamaRMSNorm: weight * (x * rsqrt(mean(x^2) + eps)), in float32."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states


class LlamaRotaryEmbedding(nn.Module):
    """inv_freq = 1 / base^(2i / dim); positions 0..T-1; cos and sin of
    cat(freqs, freqs), all float32 (the frequencies are a buffer, not a
    parameter)."""

    def __init__(self, dim, base=10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len):
        t = torch.arange(seq_len, dtype=self.inv_freq.dtype)
        freqs = torch.einsum("i,j->ij", t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class LlamaAttention(nn.Module):
    def __init__(self, dim, heads, kv_heads, theta, causal):
        super().__init__()
        self.num_heads, self.num_key_value_heads = heads, kv_heads
        self.head_dim = dim // heads
        self.num_key_value_groups = heads // kv_heads
        self.causal = causal
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=False)
        self.rotary_emb = LlamaRotaryEmbedding(self.head_dim, base=theta)

    def forward(self, hidden_states, mask=None):
        bsz, q_len, _ = hidden_states.size()
        hd = self.head_dim
        q = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, hd).transpose(1, 2)
        k = self.k_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, hd).transpose(1, 2)
        v = self.v_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, hd).transpose(1, 2)
        cos, sin = self.rotary_emb(q_len)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = repeat_kv(k, self.num_key_value_groups)
        v = repeat_kv(v, self.num_key_value_groups)
        attn_weights = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd)
        if self.causal:
            attn_weights = attn_weights.masked_fill(torch.ones(q_len, q_len, dtype=torch.bool).triu(1), float("-inf"))
        if mask is not None:
            attn_weights = attn_weights.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).nan_to_num(0.0)
        attn_output = torch.matmul(attn_weights, v)
        attn_output = attn_output.transpose(1, 2).contiguous().reshape(bsz, q_len, self.num_heads * hd)
        return self.o_proj(attn_output)


class LlamaMLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def llama_mlp(dim):
    """The LLaMA rule for the hidden width (pipec's default): 4 dim, then
    int(2 * 4 dim / 3), rounded up to a multiple of 256."""
    hidden = int(2 * (4 * dim) / 3)
    return 256 * ((hidden + 255) // 256)


class LlamaBlock(nn.Module):
    """llama_block: HF's LlamaDecoderLayer. mask: as Block's (the name of the
    input it reads as its padding mask, or True; None: no mask)."""

    def __init__(self, dim, heads, kv_heads=None, mlp=None, rope_theta=10000.0, eps=1e-5, causal=True, mask=None):
        super().__init__()
        self.self_attn = LlamaAttention(dim, heads, heads if kv_heads is None else kv_heads, rope_theta, causal)
        self.mlp = LlamaMLP(dim, llama_mlp(dim) if mlp is None else mlp)
        self.input_layernorm = RMSNorm(dim, eps=eps)
        self.post_attention_layernorm = RMSNorm(dim, eps=eps)
        self.uses_mask = mask

    def forward(self, hidden_states, mask=None):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, mask if self.uses_mask else None)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


# ---- reshape and transpose: per sample, the batch dimension kept in front


class Reshape(nn.Module):
    """reshape(d1, ...): x.reshape(B, d1, ...) (one dimension may be -1)."""

    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class Transpose(nn.Module):
    """transpose(a, b): dimensions a and b of a sample (from 0; negative
    from the end), x.transpose(a + 1, b + 1) for a, b >= 0."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        nd = x.dim() - 1
        return x.transpose(self.a % nd + 1, self.b % nd + 1)


class Residual(nn.Module):
    """residual { BODY } [shortcut { SHORTCUT }]: body(x) + shortcut(x), or
    body(x) + x without a shortcut. Its layers are numbered as pipe numbers
    them, every statement from 0 (parameter-free ones included), so its
    parameters are body.j.weight, shortcut.j.bias, ..."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Sequential(*shortcut) if shortcut else None

    def forward(self, x):
        return self.body(x) + (self.shortcut(x) if self.shortcut is not None else x)
