{{/* The chart's name, overridable. */}}
{{- define "lifeboat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the release's objects: <release>-lifeboat, or the release name when it already
contains the chart's name. */}}
{{- define "lifeboat.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "lifeboat.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lifeboat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lifeboat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "lifeboat.labels" -}}
{{ include "lifeboat.selectorLabels" . }}
app.kubernetes.io/part-of: lifeboat
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "lifeboat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lifeboat.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "lifeboat.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Namespace of an optional monitoring object: its own setting, else the release's. */}}
{{- define "lifeboat.monitoringNamespace" -}}
{{- default .root.Release.Namespace .namespace -}}
{{- end -}}

{{/* A file name as a DNS-1123 name part: "Lifeboat Overview.json" -> "lifeboat-overview". */}}
{{- define "lifeboat.fileSlug" -}}
{{- regexReplaceAll "[^a-z0-9]+" (base . | trimSuffix (ext .) | lower) "-" | trimAll "-" -}}
{{- end -}}

{{/* Refuse combinations that would let two instances act at once. */}}
{{- define "lifeboat.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "replicaCount > 1 needs leaderElection.enabled: without the Lease every replica would act" -}}
{{- end -}}
{{- if gt (int .Values.shards) 1 -}}
{{- if .Values.peers.name -}}
{{- fail "shards > 1 and peers.name do not combine yet: run one shard per peer cluster" -}}
{{- end -}}
{{- if not .Values.leaderElection.enabled -}}
{{- fail "shards > 1 needs leaderElection.enabled: each shard elects its leader on its own Lease" -}}
{{- end -}}
{{- end -}}
{{- if .Values.peers.name -}}
{{- if not .Values.leaderElection.enabled -}}
{{- fail "peers.name needs leaderElection.enabled: a peer acts only on a majority of the peer clusters' Leases" -}}
{{- end -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- fail "peers.name runs one replica per peer cluster (the other peers are its standbys): set replicaCount to 1" -}}
{{- end -}}
{{- end -}}
{{- end -}}
