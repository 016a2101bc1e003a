{{- define "facet.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "facet.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "facet.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* The DNS name clients reach a service by, and the name its TLS certificate must carry. */}}
{{- define "facet.serviceHost" -}}
{{ include "facet.fullname" .root }}-{{ .name }}.{{ .root.Release.Namespace }}.svc
{{- end -}}

{{/* Where the TLS and API-key Secrets are mounted (the agreed paths). */}}
{{- define "facet.tlsDir" -}}/etc/facet/tls{{- end -}}
{{- define "facet.tlsClientDir" -}}/etc/facet/tls-client{{- end -}}
{{- define "facet.apiKeysDir" -}}/etc/facet/api-keys{{- end -}}

{{/* The Secret whose tls.crt/tls.key the probes and `helm test` present under mTLS. */}}
{{- define "facet.tlsClientSecret" -}}
{{ .Values.tls.clientSecretName | default .Values.tls.secretName }}
{{- end -}}

{{/* Refuse TLS settings that cannot work, before anything is deployed. */}}
{{- define "facet.validate" -}}
{{- if and .Values.tls.clientAuth (not .Values.tls.secretName) -}}
{{- fail "tls.clientAuth needs tls.secretName (a Secret with tls.crt, tls.key and ca.crt)" -}}
{{- end -}}
{{- if and .Values.tls.clientAuth (not .Values.tls.caCert) -}}
{{- fail "tls.clientAuth needs ca.crt in the TLS Secret (tls.caCert: true): it is the CA client certificates are checked against" -}}
{{- end -}}
{{- if and .Values.tls.clientSecretName (not .Values.tls.clientAuth) -}}
{{- fail "tls.clientSecretName is the client certificate for mTLS: set tls.clientAuth: true (and tls.secretName) too, or leave it empty" -}}
{{- end -}}
{{- include "facet.validateRetrievalStore" . -}}
{{- end -}}

{{/* The retrieval store: Milvus needs its URI; the embedded store's SQLite volume has one writer, so one pod. */}}
{{- define "facet.validateRetrievalStore" -}}
{{- range $key := list "FACET_RETRIEVAL_STORE" "FACET_RETRIEVAL_MILVUS_URI" "FACET_RETRIEVAL_MILVUS_TOKEN" "FACET_RETRIEVAL_MILVUS_DATABASE" "FACET_RETRIEVAL_MILVUS_CONSISTENCY" -}}
{{- if hasKey $.Values.config $key -}}
{{- fail (printf "config.%s: the chart sets it from services.retrieval.store and services.retrieval.milvus (the token from milvus.tokenSecret); set those instead" $key) -}}
{{- end -}}
{{- end -}}
{{- with .Values.services.retrieval -}}
{{- if .enabled -}}
{{- if eq (include "facet.store" .) "milvus" -}}
{{- if not .milvus.uri -}}
{{- fail "services.retrieval.store is milvus: set services.retrieval.milvus.uri to the Milvus server, e.g. http://my-milvus.milvus.svc.cluster.local:19530" -}}
{{- end -}}
{{- else -}}
{{- if gt (int .replicas) 1 -}}
{{- fail (printf "services.retrieval.replicas is %d, but the embedded store keeps the collections in one pod's SQLite volume, which pods cannot share: set replicas: 1, or store: milvus (with milvus.uri) to run several" (int .replicas)) -}}
{{- end -}}
{{- if .autoscaling.enabled -}}
{{- fail "services.retrieval.autoscaling needs store: milvus: the embedded store keeps the collections in one pod's SQLite volume, which pods cannot share" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A service's store (called with its values): "milvus" keeps its data in a Milvus server; "embedded" (every other service) on its pod. */}}
{{- define "facet.store" -}}
{{ .store | default "embedded" }}
{{- end -}}

{{/* "true" when a service (called with its values) keeps its data on a PersistentVolumeClaim: persistence on and not in Milvus. */}}
{{- define "facet.dataClaim" -}}
{{- if and .persistence.enabled (ne (include "facet.store" .) "milvus") -}}true{{- end -}}
{{- end -}}

{{/* facet check's TLS flags: verify the server with ca.crt; under mTLS present `.certDir`'s certificate. */}}
{{- define "facet.checkTlsArgs" -}}
{{- if .root.Values.tls.secretName -}}
"--tls"
{{- if .root.Values.tls.caCert }}, "--root-certificates", "{{ include "facet.tlsDir" .root }}/ca.crt"{{ end }}
{{- if .root.Values.tls.clientAuth }}, "--client-cert", "{{ .certDir }}/tls.crt", "--client-key", "{{ .certDir }}/tls.key"{{ end }}
{{- end -}}
{{- end -}}

{{/* The exec probe of a TLS service: its own health over TLS on localhost, the certificate checked for its Service name. */}}
{{- define "facet.tlsProbe" -}}
exec:
  command: ["python", "-m", "deploy.check", "--health-only", "--services", {{ .name | quote }}, "{{ .name }}=127.0.0.1:{{ .svc.port }}", "--timeout-s", "4", "--tls-server-name", {{ include "facet.serviceHost" . | quote }}, {{ include "facet.checkTlsArgs" (dict "root" .root "certDir" (include "facet.tlsClientDir" .root)) }}]
timeoutSeconds: 5
{{- end -}}
