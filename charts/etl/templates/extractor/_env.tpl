{{/* Settings of the extractor, for the Deployment and the CronJob. */}}
{{- define "etl.extractor.env" -}}
{{- $env := dict "ETL_SOURCE_URL" .Values.extractor.sourceUrl "ETL_SCHEDULE" .Values.extractor.schedule "ETL_RUN_ON_START" .Values.extractor.runOnStart "ETL_PAGE_SIZE" .Values.extractor.pageSize "ETL_RETRY_DELAYS" .Values.extractor.retryDelays "ETL_PII_POLICY" .Values.transformer.piiPolicy -}}
{{- include "etl.env" (dict "ctx" . "env" (merge (deepCopy .Values.extractor.env) $env)) -}}
{{- end -}}

{{/* The extractor container (args differ: the service, or the one-shot run). */}}
{{- define "etl.extractor.container" -}}
- name: extractor
  image: {{ include "etl.image" (dict "ctx" .ctx "component" "extractor") }}
  imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
  command: [python, -m, extractor]
  args: {{ toJson .args }}
  {{- include "etl.extractor.env" .ctx | nindent 2 }}
  ports:
    - {name: ops, containerPort: {{ .ctx.Values.config.opsPort }}, protocol: TCP}
  {{- if .oneShot }}
  # A Job needs no readiness; liveness catches a run whose loop stopped turning (heartbeat per page).
  livenessProbe:
    httpGet: {path: /healthz, port: ops}
    initialDelaySeconds: 10
    periodSeconds: 15
    timeoutSeconds: 3
    failureThreshold: 4
  {{- else }}
  {{- include "etl.opsProbes" .ctx | nindent 2 }}
  {{- end }}
  {{- with .ctx.Values.extractor.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "etl.containerSecurityContext" .ctx | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
{{- end -}}
