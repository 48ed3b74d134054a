{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless overridden. */}}
{{- define "parley.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "parley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. */}}
{{- define "parley.labels" -}}
helm.sh/chart: {{ include "parley.chart" . }}
{{ include "parley.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "parley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "parley.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "parley.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "parley.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Workers can never usefully outnumber the partitions of the input topic. */}}
{{- define "parley.maxWorkers" -}}
{{- min .max .root.Values.topics.partitions }}
{{- end }}

{{/* Secret-backed environment shared by every pod: Kafka SASL, Redis password, LLM API key. */}}
{{- define "parley.secretEnv" -}}
{{- with .Values.kafka.credentialsSecret }}
{{- if .name }}
- name: PARLEY_KAFKA_SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ .usernameKey | quote }}}}
- name: PARLEY_KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ .passwordKey | quote }}}}
{{- end }}
{{- end }}
{{- with .Values.redis.passwordSecret }}
{{- if .name }}
- name: PARLEY_REDIS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ .key | quote }}}}
{{- end }}
{{- end }}
{{- with .Values.llm.apiKeySecret }}
{{- if .name }}
- name: PARLEY_TRAIN_LLM_API_KEY
  valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ .key | quote }}}}
{{- end }}
{{- end }}
{{- end }}

{{/* Volumes every pod mounts: /tmp (writable scratch under a read-only root), registry, Kafka CA. */}}
{{- define "parley.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.registry.persistence.enabled }}
- name: registry
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-registry" (include "parley.fullname" .)) .Values.registry.persistence.existingClaim }}
{{- end }}
{{- if .Values.kafka.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.caSecret.name }}
{{- end }}
{{- end }}

{{- define "parley.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.registry.persistence.enabled }}
- name: registry
  mountPath: /registry
{{- end }}
{{- if .Values.kafka.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/parley/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "parley.gpuTolerations" -}}
- key: nvidia.com/gpu
  operator: Exists
  effect: NoSchedule
{{- end }}

{{/*
Fail when tolerations given in place of the default GPU toleration leave the GPU taint untolerated:
GPU nodes carry the nvidia.com/gpu:NoSchedule taint, so such pods would wait for a node forever. A
toleration counts when it has the key (or no key and Exists) and no effect or NoSchedule; its value is
not checked, as clusters taint with different values (present, true, …).
Call with (dict "tolerations" LIST "where" "worker.tolerations").
*/}}
{{- define "parley.checkGpuTolerations" -}}
{{- $ok := false }}
{{- range .tolerations }}
{{- $keyMatches := or (eq (default "" .key) "nvidia.com/gpu") (and (not .key) (eq (default "" .operator) "Exists")) }}
{{- $effectMatches := or (not .effect) (eq .effect "NoSchedule") }}
{{- if and $keyMatches $effectMatches }}
{{- $ok = true }}
{{- end }}
{{- end }}
{{- if not $ok }}
{{- fail (printf "%s replaces the default GPU toleration, but none of its entries tolerates the nvidia.com/gpu taint that GPU nodes carry, so these pods would never be scheduled: add {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}, or leave %s empty for the default" .where .where) }}
{{- end }}
{{- end }}
