"""Memory-efficient relative-key self-attention for the w2v-BERT 2.0 layers.

HF's ``Wav2Vec2BertSelfAttention`` with ``position_embeddings_type ==
"relative_key"`` gathers a distance embedding for every (query, key) pair, a
``[T, T, head_size]`` tensor in every layer (2.3 GB for 60 s of audio), and
contracts it with the queries into a ``[B, H, T, T]`` bias. Yet the clamped
distances take only ``left + right + 1`` values, so the bias of query ``i`` and
key ``j`` is ``s[i, clamp(j - i)]``, read from the ``[B, H, T, left + right + 1]``
scores of the queries against the distance table. This module computes those
scores once, then processes the queries in chunks. A chunk's bias is a strided
view of a "skewed" template whose row ``i`` lists ``s[i, clamp(d)]`` for every
distance ``d`` the chunk needs, in the same column for every row, so one
gather with a one-row index writes it; the padding mask is merged
into it and ``torch.nn.functional.scaled_dot_product_attention`` runs the
chunk. Peak memory is ``O(chunk x T)`` per head instead of
``O(T^2 x head_size)``; the outputs are HF's up to float rounding. With
autograd SDPA takes its math path, which stores each chunk's attention
probabilities for the backward pass ([B, H, T, T] per layer, as any exact
attention without recomputation), but the [T, T, head_size] tensor is never
built.

``enable_memory_efficient_attention(model)`` switches every relative-key
attention module of a model to this path (and back with ``enabled=False``)
by changing the module's class; parameters, buffers and hence
``state_dict``/``save_pretrained`` are untouched, and it works before or after
peft LoRA injection since the projections are called, never read.
``W2VBertBackbone`` applies it by itself under its ``memory_efficient_attention``
setting (``memory_efficient_attention_on``): by default in eval mode only.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.wav2vec2_bert.modeling_wav2vec2_bert import (
    Wav2Vec2BertSelfAttention,
)

# Bias elements per query chunk when the chunk size is automatic: 2**24 fp32
# values are 64 MB (the chunk's template is slightly larger), small next to the
# 2.4 GB of weights of the full model; smaller chunks ran slower here.
AUTO_CHUNK_BIAS_ELEMENTS = 2**24


def _check_chunk_size(query_chunk_size):
    if query_chunk_size is not None and (
        not isinstance(query_chunk_size, int) or query_chunk_size < 1
    ):
        raise ValueError(
            f"query_chunk_size must be a positive int or None, got {query_chunk_size!r}"
        )


def relative_key_attention(
    query,
    key,
    value,
    distance_embeddings,
    left_max_position,
    right_max_position,
    scaling=None,
    attention_mask=None,
    dropout_p=0.0,
    query_chunk_size=None,
):
    """Attention with clamped relative-distance key embeddings, as in HF's
    ``relative_key`` w2v-BERT attention, without its ``[T, T, head_size]``
    tensor.

    The score of query ``i`` and key ``j`` is
    ``scaling * q_i . (k_j + e[clamp(j - i, -left, right) + left])`` plus the
    attention mask.

    Arguments
    ---------
    query : torch.Tensor
        Queries [B, H, Tq, head_size].
    key : torch.Tensor
        Keys [B, H, Tk, head_size].
    value : torch.Tensor
        Values [B, H, Tk, head_size].
    distance_embeddings : torch.Tensor
        Distance table [left_max_position + right_max_position + 1, head_size];
        row ``d + left_max_position`` embeds the distance ``d = j - i``.
    left_max_position : int
        Distances to keys on the left are clamped at ``-left_max_position``.
    right_max_position : int
        Distances to keys on the right are clamped at ``right_max_position``.
    scaling : float, optional
        Score scale (default ``head_size ** -0.5``).
    attention_mask : torch.Tensor, optional
        Boolean (True = attend) or additive float mask broadcastable to
        [B, H, Tq, Tk], e.g. HF's [B, 1, Tq, Tk] or a key mask [B, 1, 1, Tk].
    dropout_p : float
        Attention dropout probability (pass 0.0 in evaluation).
    query_chunk_size : int, optional
        Queries per chunk; by default chosen so that one chunk's bias holds
        about ``AUTO_CHUNK_BIAS_ELEMENTS`` values.

    Returns
    -------
    torch.Tensor
        Attention output [B, H, Tq, head_size].

    Example
    -------
    >>> q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    >>> table = torch.randn(3 + 2 + 1, 8)
    >>> relative_key_attention(q, k, v, table, 3, 2, query_chunk_size=4).shape
    torch.Size([2, 4, 10, 8])
    """
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(
            "query, key and value must be [batch, heads, time, head_size], got "
            f"shapes {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    num_distances = left_max_position + right_max_position + 1
    if distance_embeddings.shape != (num_distances, query.shape[-1]):
        raise ValueError(
            "distance_embeddings must be [left_max_position + right_max_position "
            f"+ 1, head_size] = [{num_distances}, {query.shape[-1]}], got "
            f"{tuple(distance_embeddings.shape)}"
        )
    _check_chunk_size(query_chunk_size)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    batch, heads, query_len, _ = query.shape
    key_len = key.shape[2]
    if query_chunk_size is None:
        query_chunk_size = max(1, AUTO_CHUNK_BIAS_ELEMENTS // max(1, batch * heads * key_len))
    # Score of every query with every distance embedding: [B, H, Tq, L+R+1]
    # (scaling the small table rather than the scores saves a pass).
    distance_scores = torch.matmul(query, (distance_embeddings.to(query.dtype) * scaling).t())
    # Without autograd one template buffer serves every chunk: no allocation
    # per chunk, so no heap growth from many large short-lived blocks.
    buffer = None
    if not (distance_scores.requires_grad or getattr(attention_mask, "requires_grad", False)):
        rows = min(query_chunk_size, query_len)
        buffer = distance_scores.new_empty(batch * heads * rows * (key_len + rows - 1))
    outputs = []
    for start in range(0, query_len, query_chunk_size):
        stop = min(query_len, start + query_chunk_size)
        bias = _chunk_bias(
            distance_scores[:, :, start:stop],
            start,
            key_len,
            left_max_position,
            right_max_position,
            buffer,
        )
        if attention_mask is not None:
            mask = attention_mask
            if mask.dim() == 4 and mask.shape[-2] != 1:
                mask = mask[..., start:stop, :]
            if mask.dtype == torch.bool:
                # HF fills masked scores with the dtype's minimum, not -inf.
                bias.masked_fill_(~mask, torch.finfo(bias.dtype).min)
            else:
                bias.add_(mask)
        outputs.append(
            F.scaled_dot_product_attention(
                query[:, :, start:stop],
                key,
                value,
                attn_mask=bias,
                dropout_p=dropout_p,
                scale=scaling,
            )
        )
    if len(outputs) == 1:
        return outputs[0]
    # One concatenation in [B, T, H, head_size] order (the layout the caller
    # reshapes to) rather than a copy per chunk: each parallel operation costs a
    # wake-up of the worker threads.
    return torch.cat([o.transpose(1, 2) for o in outputs], dim=1).transpose(1, 2)


def _chunk_bias(chunk_scores, start, key_len, left, right, buffer=None):
    """Relative-position bias [B, H, C, Tk] of the queries ``start`` to
    ``start + C - 1`` from their distance scores [B, H, C, L+R+1], as a view
    of a template [B, H, C, Tk + C - 1] written into ``buffer`` when given."""
    batch, heads, chunk, _ = chunk_scores.shape
    width = key_len + chunk - 1
    # Column x of the template holds distance x - zero in every row, so one
    # gather with a [width] index writes it; row i of the bias starts at
    # column chunk - 1 - i, where key j of query start + i reads distance
    # j - start - i.
    zero = start + chunk - 1
    index = torch.arange(width, device=chunk_scores.device) - zero
    index = index.clamp_(-left, right).add_(left).expand(batch, heads, chunk, width)
    if buffer is None:
        template = torch.gather(chunk_scores, 3, index)
    else:
        template = buffer[: batch * heads * chunk * width].view(batch, heads, chunk, width)
        torch.gather(chunk_scores, 3, index, out=template)
    # Rows are width - 1 >= key_len apart, so the view never overlaps itself.
    strides = template.stride()
    return template.as_strided(
        (batch, heads, chunk, key_len),
        (strides[0], strides[1], width - 1, 1),
        template.storage_offset() + chunk - 1,
    )


class MemoryEfficientWav2Vec2BertSelfAttention(Wav2Vec2BertSelfAttention):
    """``Wav2Vec2BertSelfAttention`` whose relative-key forward runs
    ``relative_key_attention``. Modules get this class from
    ``enable_memory_efficient_attention``; it adds no parameters.

    The number of heads is read from the projections' outputs, so a layer
    pruned to any number of heads works, including zero (the output is then
    ``linear_out``'s bias at every frame).

    Example
    -------
    >>> from transformers import Wav2Vec2BertConfig
    >>> config = Wav2Vec2BertConfig(hidden_size=16, num_attention_heads=2,
    ...     left_max_position_embeddings=4, right_max_position_embeddings=2)
    >>> attention = Wav2Vec2BertSelfAttention(config)
    >>> enable_memory_efficient_attention(attention)
    1
    >>> output, weights = attention(torch.randn(2, 7, 16))
    >>> output.shape, weights
    (torch.Size([2, 7, 16]), None)
    """

    # Queries per chunk; None: automatic (see AUTO_CHUNK_BIAS_ELEMENTS).
    query_chunk_size = None

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        relative_position_embeddings=None,
        **kwargs,
    ):
        """Self-attention of ``hidden_states`` [B, T, D] with HF's mask
        (boolean or additive, [B, 1, T, T], or None); returns the output
        [B, T, D] and None in place of attention weights."""
        if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
            # A non-tensor mask (flex attention's BlockMask) goes to HF's path.
            return super().forward(
                hidden_states, attention_mask, relative_position_embeddings, **kwargs
            )
        query = self.linear_q(hidden_states)
        if query.shape[-1] == 0:
            # No heads left: the empty attention output [B, T, 0] projects to
            # linear_out's bias.
            return self.linear_out(query), None
        key = self.linear_k(hidden_states)
        value = self.linear_v(hidden_states)
        width = query.shape[-1]
        if width % self.head_size or key.shape[-1] != width or value.shape[-1] != width:
            raise ValueError(
                f"attention projections must have equal widths that are multiples "
                f"of head_size {self.head_size}, got linear_q {width}, linear_k "
                f"{key.shape[-1]}, linear_v {value.shape[-1]}"
            )
        heads_shape = (*hidden_states.shape[:-1], width // self.head_size, self.head_size)
        num_distances = self.left_max_position_embeddings + self.right_max_position_embeddings + 1
        # Calling the embedding (not reading its weight) keeps any wrapper working.
        distance_embeddings = self.distance_embedding(
            torch.arange(num_distances, device=hidden_states.device)
        )
        context = relative_key_attention(
            query.view(heads_shape).transpose(1, 2),
            key.view(heads_shape).transpose(1, 2),
            value.view(heads_shape).transpose(1, 2),
            distance_embeddings,
            self.left_max_position_embeddings,
            self.right_max_position_embeddings,
            scaling=self.scaling,
            attention_mask=attention_mask,
            dropout_p=self.dropout.p if self.training else 0.0,
            query_chunk_size=self.query_chunk_size,
        )
        context = context.transpose(1, 2).reshape(*hidden_states.shape[:-1], width)
        return self.linear_out(context), None


def enable_memory_efficient_attention(model, enabled=True, query_chunk_size=None):
    """Switches every relative-key ``Wav2Vec2BertSelfAttention`` of ``model``
    to ``MemoryEfficientWav2Vec2BertSelfAttention`` (or back to HF's class with
    ``enabled=False``). Idempotent; the state dict does not change.

    Arguments
    ---------
    model : torch.nn.Module
        A ``Wav2Vec2BertModel``, an attention module, or any module holding
        them (e.g. a peft model).
    enabled : bool
        True for the memory-efficient path, False for HF's.
    query_chunk_size : int, optional
        Queries per chunk for the switched modules (None: automatic).

    Returns
    -------
    int
        Number of attention modules on the memory-efficient path afterwards.

    Example
    -------
    >>> from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel
    >>> model = Wav2Vec2BertModel(Wav2Vec2BertConfig(hidden_size=16,
    ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=32))
    >>> enable_memory_efficient_attention(model)
    2
    >>> enable_memory_efficient_attention(model, enabled=False)
    0
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_chunk_size(query_chunk_size)
    count = 0
    for module in model.modules():
        # Exact class checks: other subclasses may have their own forward.
        if (
            enabled
            and type(module) is Wav2Vec2BertSelfAttention
            and module.position_embeddings_type == "relative_key"
        ):
            module.__class__ = MemoryEfficientWav2Vec2BertSelfAttention
        elif not enabled and type(module) is MemoryEfficientWav2Vec2BertSelfAttention:
            module.__class__ = Wav2Vec2BertSelfAttention
            module.__dict__.pop("query_chunk_size", None)
        if type(module) is MemoryEfficientWav2Vec2BertSelfAttention:
            module.query_chunk_size = query_chunk_size
            count += 1
    return count


def memory_efficient_attention_on(policy, training):
    """Whether a ``memory_efficient_attention`` setting puts the attention on the
    memory-efficient path.

    Arguments
    ---------
    policy : bool or str
        True (always), False (never: HF's attention) or ``"inference"``: only when
        ``training`` is False. In training, with autograd, the memory-efficient
        path runs SDPA's math path: on training crops of a few seconds a
        forward+backward took the same time and memory either way (CPU), on 20 s
        crops 40% less time and 15% less memory; True chooses it for training too.
    training : bool
        Whether gradients go through the attention (a module in train mode).

    Returns
    -------
    bool

    Example
    -------
    >>> memory_efficient_attention_on("inference", training=False)
    True
    >>> memory_efficient_attention_on("inference", training=True)
    False
    >>> memory_efficient_attention_on("yes", training=False)
    Traceback (most recent call last):
    ...
    ValueError: memory_efficient_attention must be True, False or 'inference', got 'yes'
    """
    if not (isinstance(policy, bool) or (isinstance(policy, str) and policy == "inference")):
        raise ValueError(
            f"memory_efficient_attention must be True, False or 'inference', got {policy!r}"
        )
    return not training if policy == "inference" else policy
