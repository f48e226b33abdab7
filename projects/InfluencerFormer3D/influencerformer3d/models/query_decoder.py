"""Transformer query decoders over superpoint (or voxel) features, OneFormer3D layout.

Module names and shapes equal OneFormer3D's ``QueryDecoder`` / ``ScanNetQueryDecoder`` so that
their checkpoints load strictly into ``decoder.*``; the forward returns the same dict that
OneFormer3D's criteria consume.

Per scene ``i`` with ``P_i`` superpoints (or voxels) of ``in_channels`` features:

* ``input_proj``  (Linear, LayerNorm, ReLU): keys/values of cross-attention, ``d_model``.
* ``x_mask``      (Linear, ReLU, Linear): mask features, ``d_model``.
* queries: learned ``query`` embedding (``num_instance_queries + num_semantic_queries`` rows,
  S3DIS: 400 + 13) and/or, when ``num_instance_queries == 0``, ``query_proj`` (Linear, ReLU,
  Linear) of per-scene query features passed to ``forward`` (ScanNet: a random subset of the
  superpoint features in training, all of them at test time).
* ``num_layers`` x (``cross_attn_layers[l]``, ``self_attn_layers[l]``, ``ffn_layers[l]``).
* head on ``out_norm(q)``: ``out_cls`` (Linear, ReLU, Linear -> ``num_classes + 1``),
  optional ``out_score`` (objectness, -> 1) and mask logits ``out_norm(q) @ x_mask(x)^T``.

With ``iter_pred`` the head runs on the initial queries and after every layer
(``num_layers + 1`` predictions); layer ``l`` cross-attends under the attention mask of the
prediction before it: a query may not attend to superpoints whose predicted mask probability is
< 0.5, and a query whose mask would block every superpoint attends everywhere. The last
prediction is returned at the top level, the earlier ones in ``aux_outputs``.

``num_hybrid_queries`` > 0 (``QueryDecoder`` only; off by default): a training-only group of
learned instance queries (``hybrid_query``, H-DETR's hybrid branch) runs through the same layers
and heads, apart from the main queries (its own pass, which equals one joint pass with
self-attention blocked between the groups), and comes back under ``hybrid`` for a one-to-many
loss; at test time it is not run, so predictions and the upstream layout are unchanged (the one
extra key, ``decoder.hybrid_query.weight``, is absent from upstream checkpoints and is initialised
fresh when one is loaded).
"""
import torch
from mmengine.model import BaseModule
from torch import nn

from ..registry import register_model


def _mlp(cin, hidden, cout):
    return nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, cout))


class CrossAttentionLayer(BaseModule):
    """Queries attend to one scene's source features (per scene, no padding).

    Args:
        d_model (int): width.
        num_heads (int): attention heads.
        dropout (float): attention / output dropout.
        fix (bool): OneFormer3D's ``fix_attention``: apply dropout and the post LayerNorm
            (``norm(q + dropout(attn))``). Without it the layer returns ``q + attn`` and its
            ``norm`` is unused (as upstream).
    """

    def __init__(self, d_model, num_heads, dropout, fix=False):
        super().__init__()
        self.fix = fix
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout,
                                          batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self):
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, sources, queries, attn_masks=None):
        """sources: list of [P_i, d]; queries: list of [Q_i, d]; attn_masks: list of bool
        [Q_i, P_i] (True = blocked) or None. Returns a list of [Q_i, d]."""
        out = []
        for i, (src, q) in enumerate(zip(sources, queries)):
            mask = None if attn_masks is None else attn_masks[i]
            z = self.attn(q, src, src, attn_mask=mask, need_weights=False)[0]
            if self.fix:
                z = self.norm(q + self.dropout(z))
            else:
                z = q + z
            out.append(z)
        return out


class SelfAttentionLayer(BaseModule):
    """Post-norm self-attention among one scene's queries: ``norm(q + dropout(attn(q)))``."""

    def __init__(self, d_model, num_heads, dropout):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout,
                                          batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries):
        return [self.norm(q + self.dropout(self.attn(q, q, q, need_weights=False)[0]))
                for q in queries]


class FFN(BaseModule):
    """Post-norm feed-forward block: ``norm(q + net(q))``, ``net`` = Linear, act, Dropout,
    Linear, Dropout (``net.0`` and ``net.3`` carry weights)."""

    def __init__(self, d_model, hidden_dim, dropout, activation_fn):
        super().__init__()
        act = nn.ReLU() if activation_fn == 'relu' else nn.GELU()
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden_dim), act, nn.Dropout(dropout),
            nn.Linear(hidden_dim, d_model), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, queries):
        return [self.norm(q + self.net(q)) for q in queries]


def attention_mask_from_logits(mask_logits):
    """Boolean attention mask (True = blocked) from mask logits [Q, P].

    Blocks superpoints whose predicted probability is < 0.5 (``sigmoid(logit) < 0.5``);
    rows that would be fully blocked are unblocked entirely. Detached.
    """
    blocked = mask_logits.detach().sigmoid() < 0.5
    blocked[blocked.all(dim=-1)] = False
    return blocked


@register_model()
class QueryDecoder(BaseModule):
    """OneFormer3D query decoder (S3DIS configuration: learned queries, objectness scores).

    Args:
        num_layers (int): decoder layers.
        num_instance_queries (int): learned instance queries; 0 means queries come from
            ``forward(x, queries)`` through ``query_proj``.
        num_semantic_queries (int): learned semantic queries appended after the instance ones
            (S3DIS: one per semantic class; the criterion takes the last ones as semantic).
        num_classes (int): instance classes (``out_cls`` predicts ``num_classes + 1``).
        in_channels (int): feature width of ``x`` (backbone channels).
        d_model (int), num_heads (int), hidden_dim (int), dropout (float),
        activation_fn (str): 'relu' or 'gelu'.
        iter_pred (bool): predict after every layer and use masked attention.
        attn_mask (bool): use attention masks from the previous prediction.
        fix_attention (bool): see :class:`CrossAttentionLayer`.
        objectness_flag (bool): build ``out_score``; otherwise ``scores`` are ``None``.
        num_hybrid_queries (int): training-only one-to-many instance queries (module
            docstring); 0 (default): none.
        **kwargs: ignored (configs pass e.g. ``num_instance_classes``).
    """

    def __init__(self, num_layers, num_instance_queries, num_semantic_queries,
                 num_classes, in_channels, d_model, num_heads, hidden_dim, dropout,
                 activation_fn, iter_pred, attn_mask, fix_attention, objectness_flag,
                 init_cfg=None, num_hybrid_queries=0, **kwargs):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(num_hybrid_queries, int) or isinstance(num_hybrid_queries, bool) \
                or num_hybrid_queries < 0:
            raise ValueError(f'num_hybrid_queries must be an int >= 0 (0 = off), got {num_hybrid_queries!r}')
        if num_hybrid_queries and num_instance_queries == 0:
            raise ValueError('num_hybrid_queries needs learned instance queries (num_instance_queries > 0, '
                             'the S3DIS layout); with queries from superpoint features set it to 0')
        self.num_hybrid_queries = num_hybrid_queries
        self.objectness_flag = objectness_flag
        self.iter_pred = iter_pred
        self.attn_mask = attn_mask
        self.num_queries = num_instance_queries + num_semantic_queries
        self.input_proj = nn.Sequential(
            nn.Linear(in_channels, d_model), nn.LayerNorm(d_model), nn.ReLU())
        if self.num_queries > 0:
            self.query = nn.Embedding(self.num_queries, d_model)
        if num_instance_queries == 0:
            self.query_proj = _mlp(in_channels, d_model, d_model)
        if num_hybrid_queries:
            self.hybrid_query = nn.Embedding(num_hybrid_queries, d_model)
        self.cross_attn_layers = nn.ModuleList(
            CrossAttentionLayer(d_model, num_heads, dropout, fix_attention)
            for _ in range(num_layers))
        self.self_attn_layers = nn.ModuleList(
            SelfAttentionLayer(d_model, num_heads, dropout) for _ in range(num_layers))
        self.ffn_layers = nn.ModuleList(
            FFN(d_model, hidden_dim, dropout, activation_fn) for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(d_model)
        self.out_cls = _mlp(d_model, d_model, num_classes + 1)
        if objectness_flag:
            self.out_score = _mlp(d_model, d_model, 1)
        self.x_mask = _mlp(in_channels, d_model, d_model)

    # ------------------------------------------------------------------ helpers
    def _get_queries(self, queries=None, batch_size=None):
        """Per-scene initial queries [Q_i, d_model]: learned embedding rows first, then
        ``query_proj`` of the given per-scene query features."""
        if batch_size is None:
            batch_size = len(queries)
        out = []
        for i in range(batch_size):
            parts = []
            if hasattr(self, 'query'):
                parts.append(self.query.weight)
            if queries is not None and hasattr(self, 'query_proj'):
                parts.append(self.query_proj(queries[i]))
            if not parts:
                raise ValueError('this decoder has no learned queries: pass per-scene '
                                 'query features to forward(x, queries)')
            out.append(torch.cat(parts))
        return out

    def _head(self, query, mask_feat):
        """One scene: (normalised query, cls logits, score or None, mask logits, attn mask)."""
        nq = self.out_norm(query)
        cls_pred = self.out_cls(nq)
        score = self.out_score(nq) if self.objectness_flag else None
        mask = nq @ mask_feat.t()
        attn = attention_mask_from_logits(mask) if self.attn_mask else None
        return nq, cls_pred, score, mask, attn

    def _forward_head(self, queries, mask_feats):
        """Returns lists over scenes: cls_preds, scores, masks, attn_masks (or None)."""
        cls_preds, scores, masks, attn_masks = [], [], [], []
        for q, mf in zip(queries, mask_feats):
            _, c, s, m, a = self._head(q, mf)
            cls_preds.append(c)
            scores.append(s)
            masks.append(m)
            attn_masks.append(a)
        return cls_preds, scores, masks, (attn_masks if self.attn_mask else None)

    def _layer(self, i, inst_feats, queries, attn_masks=None):
        queries = self.cross_attn_layers[i](inst_feats, queries, attn_masks)
        queries = self.self_attn_layers[i](queries)
        return self.ffn_layers[i](queries)

    # ------------------------------------------------------------------ forward
    def _run_simple(self, inst_feats, mask_feats, queries):
        for i in range(len(self.cross_attn_layers)):
            queries = self._layer(i, inst_feats, queries)
        cls_preds, scores, masks, _ = self._forward_head(queries, mask_feats)
        return dict(cls_preds=cls_preds, masks=masks, scores=scores)

    def _run_iter_pred(self, inst_feats, mask_feats, queries):
        preds = []
        cls_preds, scores, masks, attn = self._forward_head(queries, mask_feats)
        preds.append(dict(cls_preds=cls_preds, masks=masks, scores=scores))
        for i in range(len(self.cross_attn_layers)):
            queries = self._layer(i, inst_feats, queries, attn)
            cls_preds, scores, masks, attn = self._forward_head(queries, mask_feats)
            preds.append(dict(cls_preds=cls_preds, masks=masks, scores=scores))
        out = dict(preds[-1])
        out['aux_outputs'] = preds[:-1]
        return out

    def _forward(self, run, x, queries):
        inst_feats = [self.input_proj(y) for y in x]
        mask_feats = [self.x_mask(y) for y in x]
        out = run(inst_feats, mask_feats, self._get_queries(queries, len(x)))
        if self.training and self.num_hybrid_queries:
            out['hybrid'] = run(inst_feats, mask_feats, [self.hybrid_query.weight] * len(x))
        return out

    def forward_simple(self, x, queries=None):
        return self._forward(self._run_simple, x, queries)

    def forward_iter_pred(self, x, queries=None):
        return self._forward(self._run_iter_pred, x, queries)

    def forward(self, x, queries=None):
        """Args:
            x (list[Tensor]): per scene [P_i, in_channels] superpoint/voxel features.
            queries (list[Tensor], optional): per scene [Q'_i, in_channels] query features
                (used through ``query_proj`` when the decoder has one).

        Returns:
            dict: ``cls_preds`` list of [Q_i, num_classes + 1], ``masks`` list of [Q_i, P_i]
            (logits), ``scores`` list of [Q_i, 1] (or of None without ``out_score``) and, with
            ``iter_pred``, ``aux_outputs``: ``num_layers`` dicts with the same keys from the
            initial queries and the first ``num_layers - 1`` layers.  In training with
            ``num_hybrid_queries``, ``hybrid``: the same dict for the hybrid query group.
        """
        if self.iter_pred:
            return self.forward_iter_pred(x, queries)
        return self.forward_simple(x, queries)


@register_model()
class ScanNetQueryDecoder(QueryDecoder):
    """QueryDecoder plus a semantic head ``out_sem`` on every query (ScanNet configuration).

    ``sem_preds`` (list of [Q_i, num_semantic_classes + 1]) is computed for the last prediction
    only; in ``aux_outputs`` it is ``None``.

    Args:
        num_instance_classes (int): ``out_cls`` predicts ``num_instance_classes + 1``.
        num_semantic_classes (int): ``out_sem`` predicts ``num_semantic_classes + 1``.
        d_model (int): width.
        num_semantic_linears (int): 1 (Linear) or 2 (Linear, ReLU, Linear).
        **kwargs: the :class:`QueryDecoder` arguments.
    """

    def __init__(self, num_instance_classes, num_semantic_classes, d_model,
                 num_semantic_linears, **kwargs):
        kwargs.pop('num_classes', None)
        if kwargs.get('num_hybrid_queries', 0):
            raise NotImplementedError('ScanNetQueryDecoder has no hybrid query group (its queries are '
                                      'superpoint features); set num_hybrid_queries=0')
        super().__init__(num_classes=num_instance_classes, d_model=d_model, **kwargs)
        if num_semantic_linears not in (1, 2):
            raise ValueError('num_semantic_linears must be 1 or 2')
        if num_semantic_linears == 2:
            self.out_sem = _mlp(d_model, d_model, num_semantic_classes + 1)
        else:
            self.out_sem = nn.Linear(d_model, num_semantic_classes + 1)

    def _forward_head(self, queries, mask_feats, last_flag=True):
        """Returns lists over scenes: cls_preds, sem_preds (None unless ``last_flag``),
        scores, masks, attn_masks (or None)."""
        cls_preds, sem_preds, scores, masks, attn_masks = [], [], [], [], []
        for q, mf in zip(queries, mask_feats):
            nq, c, s, m, a = self._head(q, mf)
            cls_preds.append(c)
            if last_flag:
                sem_preds.append(self.out_sem(nq))
            scores.append(s)
            masks.append(m)
            attn_masks.append(a)
        return (cls_preds, sem_preds if last_flag else None, scores, masks,
                attn_masks if self.attn_mask else None)

    def forward_simple(self, x, queries=None):
        inst_feats = [self.input_proj(y) for y in x]
        mask_feats = [self.x_mask(y) for y in x]
        queries = self._get_queries(queries, len(x))
        for i in range(len(self.cross_attn_layers)):
            queries = self._layer(i, inst_feats, queries)
        cls_preds, sem_preds, scores, masks, _ = self._forward_head(
            queries, mask_feats, last_flag=True)
        return dict(cls_preds=cls_preds, sem_preds=sem_preds, masks=masks, scores=scores)

    def forward_iter_pred(self, x, queries=None):
        inst_feats = [self.input_proj(y) for y in x]
        mask_feats = [self.x_mask(y) for y in x]
        queries = self._get_queries(queries, len(x))
        num_layers = len(self.cross_attn_layers)
        preds = []
        cls_preds, sem_preds, scores, masks, attn = self._forward_head(
            queries, mask_feats, last_flag=False)
        preds.append(dict(cls_preds=cls_preds, sem_preds=sem_preds, masks=masks,
                          scores=scores))
        for i in range(num_layers):
            queries = self._layer(i, inst_feats, queries, attn)
            cls_preds, sem_preds, scores, masks, attn = self._forward_head(
                queries, mask_feats, last_flag=i == num_layers - 1)
            preds.append(dict(cls_preds=cls_preds, sem_preds=sem_preds, masks=masks,
                              scores=scores))
        out = dict(preds[-1])
        out['aux_outputs'] = preds[:-1]
        return out
